"""The NIC dataplane: classification, connection setup (SYN cookies), teardown and splice
offloads (AccelTCP §4, Appendix A). Sans-I/O: frames and ``now`` in, tagged frames out.

Theory of operation
-------------------
``NicDataplane.process(frame, port, now, csum_ok)`` takes one Ethernet frame arriving on
``WIRE`` (0, the network) or ``HOST`` (1, the "PCIe" port) and returns ``[(port,
frame), ...]``, the frames that leave and where; ``next_deadline()`` / ``on_timer(now)``
drive the teardown engine's RTO/TIME-WAIT wheel, the splice idle sweep and the report
moderation.  State: fixed-capacity tables -- listeners (16 B each), teardown flows
(``nic.teardown``, 64 B each), splice rules (``nic.splice``, 89 B each), handed-over
flows (16 B each, below) -- and counters; no per-SYN state.

From HOST:

* 0x090E ``Listen(ip, port, mss, wscale, sack_ok, timestamps)`` installs (or updates in
  place) a listener; ``Unlisten(ip, port)`` removes it.  ip 0.0.0.0 = any local address
  (an exact ip:port entry wins over the wildcard).  The table has ``listener_capacity``
  entries of ``LISTENER_ENTRY_BYTES`` (16) bytes each, the Listen message's own layout
  (ip 4, port 2, mss 2, wscale 1, flags 1, padding to 16): NIC SRAM-shaped.  A Listen
  for a new key when the table is full is dropped and counted ``listener_table_full``:
  control.py has no ListenRefused message, so the host learns it from a StatusReport
  (``listeners`` / ``listener_capacity``) and keeps handling that port's SYNs itself --
  which it must do anyway, since without an entry the NIC passes every SYN up.
* 0x090E ``StatusRequest`` -> a ``StatusReport`` to HOST (table gauges and counters).
* 0x090B Teardown: the teardown engine takes the flow (``nic.teardown``) or refuses it
  (TABLE_FULL, DUPLICATE, BAD_STATE; without a table: TABLE_FULL) -- the advisory-offload
  contract (docs/design.md).  With ``report_interval`` > 0 the engine's acceptances and normal
  ends are not reported per flow: at most once per interval one cumulative
  ``TeardownAccepted`` (the latest flow) and one unsolicited ``StatusReport``.
* 0x090F TCP Chimney (``nic.chimney``): ChimneyOffload chunks -> the flow's TCB runs
  here (ChimneyAccepted), or ChimneyRefused (TABLE_FULL, also without a chimney table;
  DUPLICATE, also for a 4-tuple spliced or tearing down; BAD_STATE); ChimneySend and
  ChimneyUploadRequest go to the flow's entry.  While a 4-tuple is offloaded the host's
  own segments on it are dropped (``drop_chimney_host_segment``): ownership is the NIC's.
* 0x090C Splice: both rules installed -> ``SpliceInstalled``; else ``SpliceRefused``
  (TABLE_FULL, DUPLICATE, BAD_RULE).  A control frame that does not decode, or a
  NIC->host type coming from the host, is dropped and counted (``drop_<reason>``);
  control frames never reach the wire.
* An IPv4 frame whose 4-tuple is a splice rule's (the host flushing what it held while
  the splice was being installed) is translated like one from the wire.
* Everything else goes out on WIRE unchanged (``passthrough_wire``; checksum and TSO
  of the host's data segments are the TAP kernel's, docs/placements.md).  The NIC does
  not judge the host's ordinary frames; it only reads their TCP flags byte (``frame[47]``)
  for the handed-over table: an IPv4/TCP segment without IP options, unfragmented, that
  is a SYN-ACK from a listener's ip:port adds its flow (origin HOST: the host did that
  handshake itself, its SYN had no timestamps); one with FIN or RST removes it.  A data
  segment or pure ACK costs one byte test.

From WIRE (classification order):

1. Offload EtherTypes 0x090A..0x090F are dropped (``drop_offload_ethertype``): a peer
   must never be able to forge a NewConnection frame (nor, with a chimney table, the
   chimney messages; without one 0x090F is no EtherType of this NIC's and goes up,
   as from the XDP NIC, and the host has no chimney on such a NIC).
2. A 4-tuple (``frame[26:38]``) with a splice rule -> translated in a copy and sent on
   WIRE (``splice_frames``); on the splice's end (both FINs acknowledged, an acceptable
   RST) also a 0x090D ``SpliceClosed`` to HOST.  A teardown flow's 4-tuple -> the
   teardown engine (checksum verified unless ``csum_ok``) -- a SYN that reopens its
   TIME-WAIT (RFC 6191) ends the flow there and goes on to step 4, as if the flow had
   not been (a cookie SYN-ACK: the new incarnation's handshake stays on the NIC; Linux
   hands such a SYN to its listener the same way); an offloaded (chimney) flow's
   -> its TCB in ``nic.chimney`` (checksum verified likewise; ``drop_chimney_<reason>``).
3. Not IPv4/TCP, malformed (any WireError), or TCP to an ip:port with no listener ->
   HOST unchanged (``passthrough_host``; malformed ones also ``malformed_<reason>``).
   Malformed frames never raise and are not dropped here: the host's parser decides
   (and counts) -- the NIC drops only what it is sure is its own business.  Only
   frames to a listener get their TCP header parsed (checksum verified).
4. To a listener:

   * SYN (ACK/RST clear) whose 4-tuple is in the handed-over table -> HOST unchanged
     (``handed_syn_to_host``): the host's TCB answers with an RFC 5961 §4 challenge
     ACK, rate-limited per connection, instead of the NIC minting an unlimited cookie
     SYN-ACK toward the real client for every spoofed SYN.
   * SYN (ACK/RST clear) with a Timestamps option, on a listener that offers
     timestamps -> the NIC answers on WIRE with a SYN-ACK: seq = cookie ISN, ack =
     client ISN + 1, options MSS (the listener's), SACK-permitted (listener and client),
     WS (the listener's shift, only if the client sent WS and the listener offers one),
     TS (cookie TSval, client's TSval); window ``syn_window``.  The host never sees the
     SYN (``syn_cookies_sent``).  A SYN without timestamps, to a listener without
     timestamps, or with a client MSS < 536 -> HOST unchanged (``syn_to_host``).
   * ACK set, SYN/RST clear, TSecr with the cookie MARK bit (bit 0) -> ``check``.
     Valid -> HOST as 0x090A: ``wrap(frame, NewConnection(...))`` (``cookie_ack_ok``),
     and the 4-tuple goes into the handed-over table (origin COOKIE).  Valid but bare
     (no data, no FIN) on a listener with ``defer_accept`` -> absorbed, nothing kept
     (``cookie_ack_deferred``): the client's first segment with data or FIN is at the
     same ISN + 1 and echoes the same cookie TSval, so it comes up as the 0x090A, the
     request riding on it (Linux's TCP_DEFER_ACCEPT with syncookies).  Invalid, but the
     4-tuple is in the handed-over table -> HOST unchanged, as an ordinary segment
     (``handed_ack_to_host``).  Invalid otherwise (forged, stale, wrong tuple) ->
     dropped (``cookie_ack_bad``, ``drop_cookie_bad``), answered with an RST
     (<SEQ=SEG.ACK><CTL=RST>, RFC 9293 §3.10.7.1) only if ``rst_on_bad_cookie``.
   * Anything else (established traffic: host TSvals keep bit 0 clear) -> HOST.

Handed-over flows (a handshake ACK vs. a later segment)
------------------------------------------------------
Until the host's first segment reaches the client, *every* segment of the client
echoes the cookie TSval: the handshake ACK, and a request sent right after it in one
or more segments (two writes with TCP_NODELAY, pipelining).  ``check`` binds the
client's ISN (ISN = SEG.SEQ - 1), so it recognises the ACK and a first data segment at
the same sequence number, but a second segment (SEG.SEQ = ISN + 1 + len1) fails -- and
without more it would be dropped as forged: the client retransmits after its RTO
(~200 ms), the request is late by that much.  And a SYN on an established 4-tuple
(spoofed, or a client that lost its state) would get a cookie SYN-ACK toward the real
client, one per SYN, where the host sends rate-limited challenge ACKs (RFC 5961 §4).

Telling them apart needs a bit of state per flow the NIC handed over, so there is one
more table, ``handed`` (``HandedTable``): a set of wire-side 4-tuples (``frame[26:38]``
of a client frame), ``handed_capacity`` entries of ``HANDED_ENTRY_BYTES`` (16: key 12,
origin 1, padding 3).

* Filled on ``cookie_ack_ok`` (origin COOKIE) and from host-port SYN-ACKs from a
  listener's ip:port (origin HOST: connections the host set up itself because their
  SYN had no timestamps).  Re-adding a present key refreshes it.
* Emptied when the host sends FIN or RST on that 4-tuple, when the teardown engine
  accepts the flow (0x090B), and when a splice rule is installed for it (those tables
  see the flow's frames first anyway).
* Full: the oldest entry (insertion order) is evicted, ``handed_evicted``.  Lookups do
  not reorder: plain FIFO, exactly specifiable, the same in an XDP LRU hash map as long
  as it stays below capacity (the kernel's LRU is approximate when full).
* Counters: ``handed_inserted``, ``handed_removed``, ``handed_evicted``; gauge
  ``len(nic.handed)``.

Only two classifications consult it, both after the listener lookup (splice and
teardown lookups stay first), and never on an established flow's ordinary traffic
(TSecr bit 0 clear): a marked ACK *after* its cookie failed (the cookie check stays
first, so a retransmitted handshake ACK after the host's ``listen_overflow`` drop still
comes up as 0x090A and is taken then), and a SYN (one probe before minting a cookie).

Safety.  The table never makes a 0x090A: only a valid cookie does, so a forged ACK
still cannot create a connection.  A forged marked ACK on a 4-tuple in the table goes
to the host as an ordinary segment; the host judges it like any other (RFC 9293
§3.10.7.4: an unacceptable one gets an ACK, one with no TCB an RST) and creates
nothing.  A stale entry (the client's RST ended the flow, the host sent nothing)
costs only that: its segments and SYNs go to the host, which handles them itself (a
SYN there gets the host's own SYN-ACK, and a fresh HOST entry).  A missing entry
(evicted, or a reordered second segment that overtakes the ACK) is the old behaviour:
the marked segment is dropped and the client retransmits; a SYN gets a cookie.  The
table is not emptied by a wire RST: a blind RST would then clear the way for cookie
SYN-ACKs.  One cost is known: after a ``listen_overflow`` drop of the 0x090A the
entry is there but the host has no TCB, so the client's *second* segment reaches the
host, which answers with an RST (Linux does the same: that segment fails its cookie
check and meets the listener).

What the host does with a 0x090A frame
--------------------------------------
``unwrap`` gives (NewConnection h, the client's ACK as an ordinary IPv4 frame).  The
header follows control.py's contract: ``mss``/``wscale``/``sack_ok`` are *the client's*
(decoded from the cookie); the host combines them with what its own Listen offered:
snd_wscale = h.wscale and rcv_wscale = Listen.wscale when both are set (else 0 both
ways); SACK when h.sack_ok and Listen.sack_ok; send MSS = h.mss (a class value, <= the
client's real MSS).  Timestamps are on; ts_recent = the ACK's TSval, and the host's
TSvals must stay >= h.ts_base (= the ACK's TSecr) with bit 0 clear.  Sequence space:
irs = SEG.SEQ - 1, rcv_nxt = SEG.SEQ, iss = SEG.ACK - 1, snd_una = snd_nxt = SEG.ACK;
the peer's window comes from this ACK (scaled by snd_wscale).  The receive window the
NIC offered in the SYN-ACK is ``syn_window`` (65535 default, unscaled): the host should
start with rcv_adv = irs + 1 + syn_window (never move that right edge left, RFC 9293
§3.8.6.2.2), i.e. give the connection at least that much receive buffer.  Then the
segment itself (payload/FIN, if any) is processed normally.
``rtt_us`` is 0xFFFFFFFF (unknown): the cookie TSval is up to 64 ticks stale.

Bit 0 of every TSval the host sends on a listener's port must be clear -- also in the
SYN-ACKs the host itself sends for SYNs the NIC passed up -- or the peer's ACKs echo a
marked TSecr, fail ``check`` and are dropped here.  A cookie ACK that arrives after
Unlisten is passed to the host as a plain segment (it has no TCB: RST).

Counters: ``nic.counters`` (dict): syn_cookies_sent, syn_to_host, cookie_ack_ok,
cookie_ack_bad, handed_inserted, handed_removed, handed_evicted, handed_ack_to_host,
handed_syn_to_host, passthrough_wire, passthrough_host, listener_table_full, listens,
unlistens, unlisten_unknown, rst_sent, refused_teardown, refused_splice,
refused_splice_<why>, status_reports, teardown_frames, splices_installed,
splices_closed, splice_frames, splice_flushed, drops (total) and ``drop_<reason>`` /
``malformed_<reason>`` per reason; the teardown engine's own in ``teardown.counters``.
"""

import os
from collections import OrderedDict

from ..wire import control
from ..wire.control import (
    OFFLOAD_ETHERTYPES,
    NewConnection, Listen, Unlisten, StatusRequest, StatusReport, Splice, SpliceClosed,
    SpliceInstalled, SpliceRefused, TeardownAccepted, TeardownRefused,
    ChimneyOffload, ChimneySend, ChimneyUploadRequest, ChimneyRefused,
)
from ..wire.errors import WireError
from ..wire.ipv4 import parse_ipv4_fields
from ..wire.tcp import ACK, FIN, RST, SYN, build_tcp_frame, parse_tcp, tcp_options
from . import splice as sp
from ..tcp.syncookie import SynCookieJar
from .teardown import LISTENER, TeardownEngine
from .chimney import ChimneyEngine
from .toe import set_partial_checksum, set_tcp_checksum

__all__ = ["WIRE", "HOST", "GsoFrame", "LISTENER_ENTRY_BYTES", "HANDED_ENTRY_BYTES", "HANDED_COOKIE",
           "HANDED_HOST", "Listener", "ListenerTable", "HandedTable", "NicDataplane"]

WIRE = 0
HOST = 1

#: Bytes of NIC memory per listener entry: ip 4, port 2, mss 2, wscale 1, flags 1,
#: padding 6 (the Listen message's 16-byte layout, preamble replaced by nothing).
LISTENER_ENTRY_BYTES = 16

#: Bytes of NIC memory per handed-over flow: the wire-side 4-tuple key (client ip 4, local
#: ip 4, client port 2, local port 2), origin 1, padding 3.
HANDED_ENTRY_BYTES = 16
HANDED_COOKIE = 1         # origin: the NIC handed a cookie handshake over (0x090A)
HANDED_HOST = 2           # origin: the host's own SYN-ACK went out (a SYN without timestamps)

ANY_IP = b"\x00\x00\x00\x00"
_MASK = 0xFFFFFFFF
_SYN_ACK_RST = SYN | ACK | RST
_SYN_ACK = SYN | ACK
_FIN_SYN_RST = FIN | SYN | RST


class GsoFrame(bytearray):
    """A frame the NIC sends with a partial TCP checksum (the field holds the
    pseudo-header sum; the port's kernel completes it, virtio-net NEEDS_CSUM), cut into
    segments of ``gso_size`` payload bytes if longer: what splicing makes of a TAP's
    super-frames and partial-checksum frames (``process(..., csum_partial, gso_size)``)."""

    __slots__ = ("gso_size",)


_FIN_RST = FIN | RST

_COUNTERS = ("syn_cookies_sent", "syn_to_host", "cookie_ack_ok", "cookie_ack_bad",
             "cookie_ack_deferred",
             "passthrough_wire", "passthrough_host", "listener_table_full", "listens",
             "unlistens", "unlisten_unknown", "rst_sent", "refused_teardown",
             "refused_splice", "status_reports", "drops", "teardown_frames",
             "splices_installed", "splices_closed", "splice_frames", "splice_flushed",
             "handed_inserted", "handed_removed", "handed_evicted", "handed_ack_to_host",
             "handed_syn_to_host")
_SPLICE_REFUSED = {"full": control.SPLICE_REFUSED_TABLE_FULL,
                   "dup": control.SPLICE_REFUSED_DUPLICATE,
                   "bad": control.SPLICE_REFUSED_BAD_RULE}


class Listener:
    """One listener entry: what the NIC offers in its SYN-ACKs for ip:port, and whether
    it hands a connection up only with the client's first data (defer_accept)."""

    __slots__ = ("ip", "port", "mss", "wscale", "sack_ok", "timestamps", "defer_accept")

    def __init__(self, ip, port, mss, wscale, sack_ok, timestamps, defer_accept=False):
        self.ip = ip
        self.port = port
        self.mss = mss
        self.wscale = wscale
        self.sack_ok = sack_ok
        self.timestamps = timestamps
        self.defer_accept = defer_accept

    def __repr__(self):
        return "Listener(%s:%d mss=%d ws=%r sack=%s ts=%s defer=%s)" % (
            ".".join(map(str, self.ip)), self.port, self.mss, self.wscale, self.sack_ok,
            self.timestamps, self.defer_accept)


class ListenerTable:
    """Fixed capacity table of Listener keyed by (ip, port); ip 0.0.0.0 = wildcard.
    Exact entries win over the wildcard.  ``_ports`` counts entries per port so the
    fast path rejects non-listener traffic with one dict probe."""

    __slots__ = ("capacity", "_by_key", "_ports")

    def __init__(self, capacity):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError("listener_capacity must be an int >= 0")
        self.capacity = capacity
        self._by_key = {}
        self._ports = {}

    def __len__(self):
        return len(self._by_key)

    @property
    def memory_bytes(self):
        return self.capacity * LISTENER_ENTRY_BYTES

    def install(self, lst):
        """True if installed/updated, False when the table is full."""
        key = (lst.ip, lst.port)
        if key not in self._by_key:
            if len(self._by_key) >= self.capacity:
                return False
            self._ports[lst.port] = self._ports.get(lst.port, 0) + 1
        self._by_key[key] = lst
        return True

    def remove(self, ip, port):
        """True if an entry was removed."""
        if self._by_key.pop((ip, port), None) is None:
            return False
        n = self._ports[port] - 1
        if n:
            self._ports[port] = n
        else:
            del self._ports[port]
        return True

    def has_port(self, port):
        return port in self._ports

    def lookup(self, ip, port):
        if port not in self._ports:
            return None
        d = self._by_key
        lst = d.get((ip, port))
        return lst if lst is not None else d.get((ANY_IP, port))

    def entries(self):
        return list(self._by_key.values())


class HandedTable:
    """The handed-over flows: a fixed-capacity FIFO set of wire-side 4-tuples
    (``frame[26:38]`` of a frame from the client: client ip | local ip | client port |
    local port), each with a one-byte origin (HANDED_COOKIE / HANDED_HOST).
    ``HANDED_ENTRY_BYTES`` (16) per entry.  ``add`` of a new key when full evicts the
    oldest entry (insertion order; re-adding a present key makes it the newest); lookups
    do not reorder.  ``_index`` is the dict the dataplane probes directly."""

    __slots__ = ("capacity", "_index")

    def __init__(self, capacity):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 0:
            raise ValueError("handed_capacity must be an int >= 0")
        self.capacity = capacity
        self._index = OrderedDict()

    def __len__(self):
        return len(self._index)

    def __contains__(self, key):
        return key in self._index

    @property
    def memory_bytes(self):
        return self.capacity * HANDED_ENTRY_BYTES

    def get(self, key):
        """The origin of `key`'s entry, or None."""
        return self._index.get(key)

    def add(self, key, origin):
        """Insert (or refresh) `key`; -> 1 if the oldest entry was evicted for it, else 0
        (also when the capacity is 0: nothing is kept)."""
        d = self._index
        if key in d:
            d.move_to_end(key)
            d[key] = origin
            return 0
        if self.capacity == 0:
            return 0
        evicted = 0
        if len(d) >= self.capacity:
            d.popitem(last=False)
            evicted = 1
        d[key] = origin
        return evicted

    def discard(self, key):
        """True if `key` had an entry (now removed)."""
        return self._index.pop(key, None) is not None

    def keys(self):
        return list(self._index)


class NicDataplane:
    """The NIC (see the module docstring).  mac: the NIC/host MAC (source of frames the
    NIC originates).  secret + cookie_kwargs (tick, window, period, ts_hz, ts_offset):
    the SynCookieJar.  syn_window: the window field of the NIC's SYN-ACKs.
    rst_on_bad_cookie: answer a failed cookie ACK with an RST (default: silent drop).
    Capacities (entries; 0 turns the table off): listener_capacity, teardown_capacity,
    splice_capacity (rules), handed_capacity (handed-over flows)."""

    def __init__(self, mac, *, listener_capacity=64, teardown_capacity=65536,
                 splice_capacity=4096, handed_capacity=65536, splice_idle=300.0,
                 report_interval=0.001, secret=None,
                 syn_window=65535, rst_on_bad_cookie=False, ttl=64, teardown_kwargs=None,
                 mtu=1500, chimney_capacity=1024, chimney_kwargs=None, **cookie_kwargs):
        mac = bytes(mac)
        if len(mac) != 6:
            raise ValueError("mac must be 6 bytes")
        if not 0 <= syn_window <= 0xFFFF:
            raise ValueError("syn_window must be 0..65535")
        self.mac = mac
        self.listeners = ListenerTable(listener_capacity)
        self.handed = HandedTable(handed_capacity)
        self._ho_index = self.handed._index
        self.jar = SynCookieJar(os.urandom(32) if secret is None else secret,
                                **cookie_kwargs)
        self.syn_window = syn_window
        self.rst_on_bad_cookie = rst_on_bad_cookie
        self.ttl = ttl
        self.ident = 0
        self.counters = dict.fromkeys(_COUNTERS, 0)
        self.host_mac = None          # learned from the host's control frames
        self.teardown = (TeardownEngine(mac, teardown_capacity, ttl=ttl,
                                        moderate=report_interval > 0,
                                        **(teardown_kwargs or {}))
                         if teardown_capacity else None)
        self.report_interval = report_interval
        self._report_at = None        # when the moderated teardown reports are due
        self._reported = (None, 0)    # (last accepted, done_total) as last reported
        self._td_index = self.teardown._index if self.teardown is not None else {}
        self.splices = sp.SpliceTable(splice_capacity) if splice_capacity else None
        self._sp_index = self.splices._index if self.splices is not None else {}
        self._sp_meta = {}            # client-side key -> (splice_id, install time)
        self.splice_idle = splice_idle
        self._idle_check = None       # next idle sweep of the splice table
        self.mtu = mtu                # the wire's: a flushed spliced frame above it is cut
        # TCP Chimney (nic.chimney): offloaded connections, run by the host's TCB code
        self.chimney = (ChimneyEngine(mac, chimney_capacity, ttl=ttl, **(chimney_kwargs or {}))
                        if chimney_capacity else None)
        self._ch_index = self.chimney.flows if self.chimney is not None else {}

    # -- timers ------------------------------------------------------------------

    def next_deadline(self):
        d = self.teardown.next_deadline() if self.teardown is not None else None
        for t in (self._idle_check, self._report_at):
            if t is not None and (d is None or t < d):
                d = t
        if self._ch_index:
            t = self.chimney.next_deadline()
            if t is not None and (d is None or t < d):
                d = t
        return d

    def on_timer(self, now):
        out = []
        if self.teardown is not None:
            out = self.teardown.on_timer(now)
            self._td_changed(now)
            t = self._report_at
            if t is not None and now >= t:
                self._td_report(out)
        t = self._idle_check
        if t is not None and now >= t:
            for slot in self.splices.expired(now, self.splice_idle):
                out.append(self._splice_closed(slot, control.SPLICE_END_IDLE, now))
            self._idle_check = (now + min(self.splice_idle, 1.0)) if self._sp_index else None
        if self._ch_index:
            out += self.chimney.on_timer(now)
        return out

    # -- helpers -------------------------------------------------------------------

    def _count(self, name):
        c = self.counters
        c[name] = c.get(name, 0) + 1

    def _drop(self, reason):
        c = self.counters
        c["drops"] += 1
        key = "drop_" + reason
        c[key] = c.get(key, 0) + 1
        return []

    def _to_host(self, frame, malformed=None):
        c = self.counters
        c["passthrough_host"] += 1
        if malformed is not None:
            key = "malformed_" + malformed
            c[key] = c.get(key, 0) + 1
        return [(HOST, frame)]

    # -- entry point ---------------------------------------------------------------

    def process(self, frame, port, now, csum_ok=False, csum_partial=False, gso_size=0):
        """One frame in on `port` (WIRE/HOST) -> [(port, frame), ...] out.  Never raises
        on frame contents.  ``csum_ok``: the port vouches for the frame's TCP checksum
        (a TAP's kernel, or a partial checksum from it), so the NIC does not verify it;
        frames passed on to HOST keep that verdict (the caller hands it on).  A TAP with
        offloads also says ``csum_partial`` (the checksum field holds only the
        pseudo-header sum) and ``gso_size`` (a super-frame's MSS): a spliced frame keeps
        them, leaving as a ``GsoFrame``.  On HOST, ``csum_partial`` says the host's frames
        came from such a TAP: a spliced one it flushes gets its checksum redone."""
        if port == WIRE:
            if csum_partial or gso_size:
                return self._from_wire(frame, now, csum_ok, (csum_partial, gso_size))
            return self._from_wire(frame, now, csum_ok)
        if port == HOST:
            return self._from_host(frame, now, csum_partial)
        raise ValueError("port must be WIRE (0) or HOST (1), got %r" % (port,))

    # -- host side -----------------------------------------------------------------

    def _from_host(self, frame, now, csum_partial=False):
        if len(frame) < 14 or ((frame[12] << 8) | frame[13]) not in OFFLOAD_ETHERTYPES:
            if self._sp_index and len(frame) >= 38:
                # the host flushing what it buffered while a splice was installed
                slot = self._sp_index.get(bytes(frame[26:38]))
                if slot is not None:
                    self.counters["splice_flushed"] += 1
                    return self._splice(frame, slot, now, None if csum_partial else
                                        (False, 0))
            # Only a segment with FIN, SYN or RST (byte 47 without IP options) looks
            # further: data and pure ACKs cost one byte test.
            if self._ch_index and len(frame) >= 38 and \
                    control.wire_key(frame) in self._ch_index:
                # the NIC owns an offloaded connection: the host's TCB is frozen
                return self._drop("chimney_host_segment")
            if len(frame) >= 54 and frame[47] & _FIN_SYN_RST:
                self._host_segment(frame)
            self.counters["passthrough_wire"] += 1
            return [(WIRE, frame)]
        host_mac = self.host_mac = bytes(frame[6:12])
        try:
            decoded = control.decode_from_host(frame)
        except WireError as e:
            return self._drop(e.reason)
        if decoded is None:
            return self._drop("ctl_from_host_unexpected")
        msg, seg_frame = decoded
        t = type(msg)
        if t is Listen:
            return self._listen(msg)
        if t is Unlisten:
            self.counters["unlistens"] += 1
            if not self.listeners.remove(msg.ip, msg.port):
                self._count("unlisten_unknown")
            return []
        if t is StatusRequest:
            self.counters["status_reports"] += 1
            return [(HOST, self.status_report(msg.request_id).frame(host_mac, self.mac))]
        if t is Splice:
            return self._splice_install(msg, host_mac, now)
        if t is ChimneySend or t is ChimneyOffload or t is ChimneyUploadRequest:
            return self._chimney_from_host(msg, host_mac, now)
        if seg_frame is not None:                        # 0x090B Teardown
            if self.teardown is not None:
                out = self.teardown.accept(msg, seg_frame, host_mac, now)
                self._td_changed(now)
                if self._ho_index and len(seg_frame) >= 38:
                    key = control.wire_key(seg_frame)
                    if key in self._td_index:             # the engine owns it now
                        self._handed_discard(key)
                return out
            # no teardown table: refuse (the host closes the flow itself)
            self.counters["refused_teardown"] += 1
            return [(HOST, TeardownRefused(msg.flow_id, control.wire_key(seg_frame),
                                           control.TEARDOWN_REFUSED_TABLE_FULL)
                     .frame(host_mac, self.mac))]
        return self._drop("ctl_from_host_unexpected")       # a NIC->host message type

    # -- TCP Chimney ---------------------------------------------------------------

    def _chimney_from_host(self, msg, host_mac, now):
        ch = self.chimney
        t = type(msg)
        if t is ChimneySend:
            return ch.send(msg, now) if ch is not None else self._drop("chimney_unknown")
        if t is ChimneyUploadRequest:
            return ch.upload_request(msg, now) if ch is not None else \
                self._drop("chimney_unknown")
        if ch is None:
            return [(HOST, ChimneyRefused(msg.flow_id, msg.key,
                                          control.CHIMNEY_REFUSED_TABLE_FULL)
                     .frame(host_mac, self.mac))]
        if msg.key in self._sp_index or msg.key in self._td_index:
            return [(HOST, ChimneyRefused(msg.flow_id, msg.key,
                                          control.CHIMNEY_REFUSED_DUPLICATE)
                     .frame(host_mac, self.mac))]
        out = ch.offload_chunk(msg, host_mac, now)
        if self._ho_index and msg.key in self._ch_index:
            self._handed_discard(msg.key)            # the chimney table sees it first
        return out

    # -- teardown report moderation ------------------------------------------------

    def _td_changed(self, now):
        """Moderated reports (``report_interval`` > 0): at most one cumulative
        TeardownAccepted and one StatusReport per interval, like interrupt
        moderation, instead of two control frames per flow."""
        td = self.teardown
        if self._report_at is None and td.moderate and \
                (td.last_accepted, td.counters["done_total"]) != self._reported:
            self._report_at = now + self.report_interval

    def _td_report(self, out):
        td = self.teardown
        self._report_at = None
        last, done = td.last_accepted, td.counters["done_total"]
        mac = self.host_mac or bytes(6)
        if last is not None and last != self._reported[0]:
            out.append((HOST, TeardownAccepted(*last).frame(mac, self.mac)))
        if done != self._reported[1]:
            self.counters["status_reports"] += 1
            out.append((HOST, self.status_report(0).frame(mac, self.mac)))
        self._reported = (last, done)

    # -- splice (§4.3) -------------------------------------------------------------

    def _splice_install(self, msg, host_mac, now):
        why = None
        if self.splices is None:
            why = "full"
        else:
            try:
                self.splices.install(msg.rule_a, msg.rule_b, now)
            except sp.TableFull:
                why = "full"
            except ValueError as e:
                why = "dup" if "already installed" in str(e) else "bad"
        if why is not None:
            self.counters["refused_splice"] += 1
            self._count("refused_splice_" + why)
            return [(HOST, SpliceRefused(msg.splice_id, _SPLICE_REFUSED[why])
                     .frame(host_mac, self.mac))]
        self._sp_meta[msg.rule_a.key] = (msg.splice_id, now)
        if self._ho_index:                    # the splice rules own these tuples now
            self._handed_discard(msg.rule_a.key)
            self._handed_discard(msg.rule_b.key)
        self.counters["splices_installed"] += 1
        if self._idle_check is None:
            self._idle_check = now + min(self.splice_idle, 1.0)
        return [(HOST, SpliceInstalled(msg.splice_id).frame(host_mac, self.mac))]

    def _splice(self, frame, slot, now, offload=(False, 0)):
        """Translate one frame of a spliced connection (in a copy) and forward it; on the
        end of the splice also report it to the host.  ``offload``: (csum_partial,
        gso_size) of a wire frame; None for one the host flushes that came from a TAP
        with offloads (full or partial, nobody knows: its checksum is redone here, and
        above the MTU it leaves as a super-frame)."""
        if offload is None:
            gso = 0
            if len(frame) - 14 > self.mtu and len(frame) >= 54:
                gso = self.mtu - 20 - ((frame[46] >> 4) << 2)
        else:
            gso = offload[1] or (0xFFFF if offload[0] else 0)
        if gso:
            buf = GsoFrame(frame)
            buf.gso_size = gso
        else:
            buf = bytearray(frame)
        ev = sp.translate(self.splices, slot, buf, now)
        if ev == sp.DROP:
            return self._drop("splice_untranslatable")
        if gso:
            # RFC 1624 updated the field as a full checksum; a partial one is the
            # pseudo-header sum of the new addresses and length, nothing else
            set_partial_checksum(buf)
        elif offload is None:
            set_tcp_checksum(buf)
        self.counters["splice_frames"] += 1
        if ev < sp.CLOSED:
            return [(WIRE, buf)]
        if ev == sp.CLOSED:
            reason = control.SPLICE_END_FIN
        elif self.splices.rule(slot)["from_server"]:       # who sent the RST
            reason = control.SPLICE_END_RESET_SERVER
        else:
            reason = control.SPLICE_END_RESET_CLIENT
        return [(WIRE, buf), self._splice_closed(slot, reason, now)]

    def _splice_closed(self, slot, reason, now):
        rep = self.splices.remove(slot)
        sid, t0 = self._sp_meta.pop(rep.client_key, (0, now))
        self.counters["splices_closed"] += 1
        msg = SpliceClosed(sid, rep.client_key, rep.server_key, reason, rep.fin_c, rep.fin_s,
                           int((now - t0) * 1000), rep.packets_c, rep.bytes_c, rep.packets_s,
                           rep.bytes_s)
        return (HOST, msg.frame(self.host_mac or bytes(6), self.mac))

    # -- handed-over flows -----------------------------------------------------------

    def _handed_add(self, key, origin):
        h = self.handed
        if not h.capacity:
            return
        c = self.counters
        if key not in self._ho_index:
            c["handed_inserted"] += 1
        if h.add(key, origin):
            c["handed_evicted"] += 1

    def _handed_discard(self, key):
        if self.handed.discard(key):
            self.counters["handed_removed"] += 1

    def _host_segment(self, frame):
        """A host frame whose byte 47 has FIN, SYN or RST: if it is an IPv4/TCP segment
        without IP options and unfragmented, a SYN-ACK from a listener's port adds the
        flow (the host's own handshake) and a FIN or RST removes it."""
        if (frame[12] != 8 or frame[13] or frame[14] != 0x45 or frame[23] != 6
                or frame[20] & 0x3F or frame[21]):
            return
        flags = frame[47]
        if flags & _FIN_RST:
            if self._ho_index:
                self._handed_discard(control.wire_key(frame))
        elif flags & _SYN_ACK == _SYN_ACK:
            if self.listeners.lookup(bytes(frame[26:30]),
                                     (frame[34] << 8) | frame[35]) is not None:
                self._handed_add(control.wire_key(frame), HANDED_HOST)

    def _listen(self, msg):
        self.counters["listens"] += 1
        lst = Listener(msg.ip, msg.port, msg.mss, msg.wscale, msg.sack_ok, msg.timestamps,
                       msg.defer_accept)
        if not self.listeners.install(lst):
            self.counters["listener_table_full"] += 1
            return self._drop("listener_table_full")
        return []

    def status_report(self, request_id=0):
        c = self.counters
        td = self.teardown
        return StatusReport(
            request_id=request_id,
            teardown_active=td.active if td is not None else 0,
            teardown_capacity=td.capacity if td is not None else 0,
            splice_rules=len(self.splices) if self.splices is not None else 0,
            splice_capacity=self.splices.capacity if self.splices is not None else 0,
            listeners=len(self.listeners),
            listener_capacity=self.listeners.capacity, cookies_sent=c["syn_cookies_sent"],
            cookies_ok=c["cookie_ack_ok"], cookies_bad=c["cookie_ack_bad"],
            syn_to_host=c["syn_to_host"],
            teardowns_done=td.counters.get("done_total", 0) if td is not None else 0,
            splices_closed=c["splices_closed"], drops=c["drops"])

    # -- wire side -----------------------------------------------------------------

    def _from_wire(self, frame, now, csum_ok=False, offload=(False, 0)):
        n = len(frame)
        if n < 14:
            return self._to_host(frame, "eth_short")
        et = (frame[12] << 8) | frame[13]
        if et != 0x0800:
            if et in OFFLOAD_ETHERTYPES:
                if et == control.ETHERTYPE_CHIMNEY and self.chimney is None:
                    return self._to_host(frame)   # not ours without a chimney table
                return self._drop("offload_ethertype")
            return self._to_host(frame)
        mv = memoryview(frame)
        try:
            src, dst, proto, _, _, _, _, total, _ = parse_ipv4_fields(mv[14:])
        except WireError as e:
            return self._to_host(frame, e.reason)
        if proto != 6:
            return self._to_host(frame)
        if total < 24:
            return self._to_host(frame, "tcp_short")
        if self._sp_index or self._td_index or self._ch_index:
            key = frame[26:38]
            if key.__class__ is not bytes:
                key = bytes(key)
            slot = self._sp_index.get(key)
            if slot is not None:
                return self._splice(frame, slot, now, offload)
            fid = self._td_index.get(key)
            if fid is not None:
                try:
                    seg = parse_tcp(mv[34:14 + total], src, dst, not csum_ok)
                except WireError as e:
                    return self._drop("teardown_" + e.reason)
                self.counters["teardown_frames"] += 1
                out = self.teardown.on_segment(fid, frame, seg, now)
                self._td_changed(now)
                if out and out[-1][0] == LISTENER:
                    # RFC 6191: a new incarnation's SYN ended the flow's TIME-WAIT; it
                    # meets the listener like any SYN (a cookie SYN-ACK), or the host
                    lst = self.listeners.lookup(dst, seg.dst_port)
                    out[-1:] = self._to_host(frame) if lst is None else \
                        self._to_listener(frame, lst, src, dst, seg, now)
                return out
            flow = self._ch_index.get(key)
            if flow is not None:
                try:
                    seg = parse_tcp(mv[34:14 + total], src, dst, not csum_ok)
                except WireError as e:
                    return self._drop("chimney_" + e.reason)
                return self.chimney.on_segment(flow, seg, now)
        dport = (frame[36] << 8) | frame[37]
        lst = self.listeners.lookup(dst, dport)
        if lst is None:
            return self._to_host(frame)
        try:
            seg = parse_tcp(mv[34:14 + total], src, dst, not csum_ok)
        except WireError as e:
            return self._to_host(frame, e.reason)
        return self._to_listener(frame, lst, src, dst, seg, now)

    def _to_listener(self, frame, lst, src, dst, seg, now):
        flags = seg.flags
        if flags & _SYN_ACK_RST == SYN:
            if self._handed(frame):
                # A SYN on a flow the host holds: the host's TCB answers it (RFC 5961 §4:
                # a rate-limited challenge ACK), never a cookie SYN-ACK.
                self.counters["handed_syn_to_host"] += 1
                return self._to_host(frame)
            return self._syn(frame, lst, src, dst, seg, now)
        if flags & _SYN_ACK_RST == ACK and seg.tsecr is not None and seg.tsecr & 1:
            return self._cookie_ack(frame, lst, src, dst, seg, now)
        return self._to_host(frame)

    def _handed(self, frame):
        """Is the wire-side 4-tuple of `frame` in the handed-over table?"""
        if not self._ho_index:
            return False
        key = frame[26:38]
        return (key if key.__class__ is bytes else bytes(key)) in self._ho_index

    def _syn(self, frame, lst, src, dst, seg, now):
        if seg.tsval is None or not lst.timestamps:
            self.counters["syn_to_host"] += 1
            return self._to_host(frame)
        client_ws = seg.wscale
        try:
            cookie = self.jar.make(dst, seg.dst_port, src, seg.src_port, seg.seq, seg.mss,
                                   client_ws, seg.sack_permitted, now)
        except ValueError:                  # cannot happen for parsed values; be safe
            cookie = None
        if cookie is None:                  # client MSS below the smallest class
            self.counters["syn_to_host"] += 1
            return self._to_host(frame)
        isn, tsval = cookie
        ws = lst.wscale if client_ws is not None else None
        opts = tcp_options(mss=lst.mss, wscale=ws,
                           sack_permitted=lst.sack_ok and seg.sack_permitted,
                           timestamps=(tsval, seg.tsval))
        self.ident = (self.ident + 1) & 0xFFFF
        out = build_tcp_frame(bytes(frame[6:12]), self.mac, dst, src, self.ident,
                              seg.dst_port, seg.src_port, isn, (seg.seq + 1) & _MASK,
                              SYN | ACK, self.syn_window, opts, b"", self.ttl)
        self.counters["syn_cookies_sent"] += 1
        return [(WIRE, out)]

    def _cookie_ack(self, frame, lst, src, dst, seg, now):
        opts = self.jar.check(dst, seg.dst_port, src, seg.src_port, seg.seq, seg.ack,
                              seg.tsecr, now)
        if opts is None:
            if self._handed(frame):
                # A later segment of a handed-over flow still echoing the cookie TSval
                # (sent before the host's first reply): an ordinary segment.
                self.counters["handed_ack_to_host"] += 1
                return self._to_host(frame)
            self.counters["cookie_ack_bad"] += 1
            self._drop("cookie_bad")
            if not self.rst_on_bad_cookie:
                return []
            self.counters["rst_sent"] += 1
            self.ident = (self.ident + 1) & 0xFFFF
            rst = build_tcp_frame(bytes(frame[6:12]), self.mac, dst, src, self.ident,
                                  seg.dst_port, seg.src_port, seg.ack, 0, RST, 0, b"", b"",
                                  self.ttl)
            return [(WIRE, rst)]
        if lst.defer_accept and not seg.payload and not seg.flags & FIN:
            self.counters["cookie_ack_deferred"] += 1
            return []
        hdr = NewConnection(mss=opts.mss, wscale=opts.wscale, sack_ok=opts.sack_ok,
                            timestamps=True, ts_base=seg.tsecr)
        self.counters["cookie_ack_ok"] += 1
        key = frame[26:38]
        self._handed_add(key if key.__class__ is bytes else bytes(key), HANDED_COOKIE)
        return [(HOST, control.wrap(frame, hdr))]
