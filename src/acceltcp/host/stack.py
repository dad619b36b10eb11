"""The host stack: frames in, TCBs driven, frames out (mTCP's role in AccelTCP).

Theory of operation
-------------------
One `HostStack` owns one IPv4 address on one frame device. It is sans-thread and
sans-loop: a driver (normally `host.runner.StackRunner`) calls exactly two entries,

* `receive_frame(frame, csum_ok=False)` for every frame the device delivers
  (`csum_ok`: the device vouches for the TCP checksum), and
* `on_timer()` when `next_deadline()` has passed,

and after either one re-reads `next_deadline()` to re-arm its single timer. Application
calls that can move a deadline earlier (`send`, `close`, `connect`, ...) made *outside*
those two entries call `stack.wakeup()` (if set) so the driver re-arms early. The stack
never installs itself as the device receiver: the runner does, so that it can wrap the
entry with timer re-arming and CPU accounting.

Its parts, each a component with its own state: `host.conns` (the demux tables: where
each TCB lives, and what moving it counts), `host.conn` (the `HostConn` record on each
TCB, and how TCBs are made), `host.listen` (listeners, SYN queues, SYN-flood defence),
`host.timers` (the connection timer heap), `host.timewait` (TIME-WAIT records),
`host.arp` (neighbour resolution), `host.ports` (local ports, ISNs, timestamp offsets),
`host.addr` (routes), `host.stats` (counter totals, the stats snapshot) and, on a NIC,
`host.offload` (teardown and splice offload, through the offload contract of
`host.contract`) and, on a NIC that runs it (``device.chimney``), `host.chimney` (TCP
Chimney: ``send``, ``recv``, ``shutdown``, ``close`` and ``abort`` of an offloaded
connection go there; its 0x090F frames too). Two of HostStack's base classes hold
calls made from outside the entries: `host.contract.OffloadContract` (what the
offloads may do to the stack) and `host.cpu.CpuCategories` (``entry_kind`` and
``app_timing``, for a driver that accounts CPU by category).

Receive path (the hot path). Ethernet -> IPv4 -> TCP through the `wire` parsers (each
validation failure is a `WireError` whose `reason` becomes `drops[reason]`). IP options
are rejected by `parse_ipv4_fields`, so the TCP ports sit at a fixed offset and the demux
key is the raw 12 bytes ``frame[26:38]`` = src-ip|dst-ip|sport|dport, sliced without
integer decoding and looked up in one dict (`_table`). A hit goes straight to
`conn.on_segment(seg, now)`; a miss takes the slow path: embryonic children of a listener
(`_embryonic`), TIME-WAIT records (`_timewait`), listeners, RST generation for closed
ports (RFC 9293 §3.10.7.1). Every answer to a segment without a TCB goes to the frame's
sender MAC, so spoofed sources cost no ARP work.

Output. The TCB calls `_output(conn, flags, seq, ack, window, options, payload)`; the
stack builds the frame with `wire.tcp.build_tcp_frame`, the destination MAC coming from
the connection's cached ARP entry (one attribute check per frame); an unresolved next
hop's frames wait in `host.arp`. On a device with `offload` and `send_segment` (a TAP
with virtio-net headers) data segments leave with a partial checksum for the device to
complete, as TSO super-segments when `tso` is on.

Timers. After every call into a TCB the stack re-asks its deadline (`_touch`) and arms
the timer heap (`host.timers`, lazily invalidated) if it moved earlier; `on_timer` fires
the due TCBs, reaps TIME-WAIT records and runs ARP's own small heap.

Connection-setup offload (AccelTCP §4.1). On a device that is a NIC (``device.nic``) a
listener opened with ``offload_setup=True`` is announced to the NIC (`host.listen`),
which then answers its SYNs with SYN cookies and hands each completed handshake up as
one 0x090A frame: a ``NewConnection`` header in front of the client's ACK
(``nic.dataplane`` states the contract). ``_new_connection`` builds the TCB with
``accept_cookie`` -- already ESTABLISHED, straight into ``_table``, never embryonic --
and puts it on the accept queue at its first event like any other child
(``conns_accepted``, ``cookie_conns``). SYNs the NIC does not answer (no timestamps, a
tiny MSS, listener table full) still arrive and take the ordinary path, so an offloaded
listener is never worse off. 0x090A frames are taken from a NIC device only, and a
0x090A for a 4-tuple that already has a TCB or TIME-WAIT record (a retransmitted ACK
still echoing the cookie TSval) or for a port no longer offloaded is handled as the
ordinary segment it carries.

Lazy TCB creation (AccelTCP §5.2, ``lazy_tcb``): a child born from a cookie may start
as a ``tcp.quasi.QuasiTcb`` and become a full TCB only when it needs one; `host.conn`
states when and why, and the counters (``tcb_quasi``, ``tcb_promoted_<reason>``, ...).

Connections leave the table when ``conn.closed`` (on reset, abort, timeout, LAST-ACK
done) or when they reach TIME-WAIT: the TCB then hands the rest of 2MSL to a compact
`tcp.timewait.TimeWait` record (`host.timewait`) and is freed. Their counters are kept
by `host.stats`.
"""

import collections
import errno
import os
import types

from ..tcp import states
from ..tcp.config import TcpConfig
from ..tcp.connection import TcpConnection
from ..tcp.quasi import QuasiTcb
from ..tcp.seq import seq_add
from . import stats
from .addr import Route, oserror, to_ip, to_mac
from .arp import ARP_DROP_REASONS, OUTBOUND_DROP_REASONS, ArpCache
from .conn import HostConn, TcbFactory
from .cpu import _NIC_REPORTS, CpuCategories
from .conns import ConnTable
from .contract import OffloadContract
from .listen import LISTEN_DROP_REASONS, SYNACK_RETRIES, Listener, ListenTable
from .offload import NicOffload
from .chimney import ChimneyHost
from .ports import InitialNumbers, PortTable
from .stats import TCB_COUNTERS, ClosedTcbStats
from .timers import TimerHeap
from .timewait import TimeWaitTable
from ..wire import control
from ..wire.errors import WireError
from ..wire.ethernet import (BROADCAST_MAC, ETH_HLEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ZERO_MAC,
                             mac_to_str, parse_ethernet)
from ..wire.ipv4 import IPPROTO_TCP, ip_to_str, parse_ipv4_fields
from ..wire.tcp import (ACK, FIN, RST, SYN, TSO_PAYLOAD_MAX, build_tcp_frame,
                        build_tcp_header_partial, parse_tcp)

__all__ = ["HostStack", "HostConn", "Listener", "HOST_DROP_REASONS", "OUTBOUND_DROP_REASONS",
           "TCB_COUNTERS", "to_ip", "to_mac"]

#: Drop reasons the host stack adds to the `wire` parser reasons (`wire.errors.DROP_REASONS`):
#: its own, its listeners' (host.listen) and its ARP cache's (host.arp).
HOST_DROP_REASONS = (
    "not_for_us",             # Ethernet dst not ours/broadcast, or IPv4 dst not our address
    "ethertype_unsupported",  # neither IPv4 nor ARP
    "ip_proto_unsupported",   # IPv4 but not TCP
    "bad_src_addr",           # martian source (0/8, multicast, broadcast, ourselves): no reply
    "rst_no_connection",      # RST for no TCB: ignored, never answered (§3.10.7.1)
    "teardown_pending",       # for a connection offered to the NIC, no answer yet: its
                              # owner is undecided (host.offload); the peer retransmits
    "teardown_late",          # for a connection the NIC took lately, queued before it
                              # did (host.offload): not reset; the peer retransmits
    "splice_late",            # for a splice the NIC ended lately, passed up after its
                              # rules were gone (host.offload): not reset, not forwarded
    "internal_error",         # an exception from a TCB/app callback (strict=False only)
) + LISTEN_DROP_REASONS + ARP_DROP_REASONS

_SYN_RECEIVED = states.SYN_RECEIVED
_TIME_WAIT = states.TIME_WAIT


def _listen_setting(name):
    return property(lambda self: getattr(self._listen, name),
                    lambda self, value: setattr(self._listen, name, value))


class HostStack(OffloadContract, CpuCategories):
    """A user-level TCP/IPv4 host stack over one frame device. See the module docstring."""

    def __init__(self, device, ip, clock, *, config=None, netmask=24, gateway=None,
                 arp_timeout=60.0, isn=None, ephemeral=(32768, 60999), max_syn_backlog=1024,
                 name="", secret=None, strict=False, tcb_class=TcpConnection, tso=True,
                 syn_cookies=True, synack_retries=SYNACK_RETRIES, lazy_tcb=True):
        self.device = device
        self.mac = to_mac(device.mac)
        self.ip = to_ip(ip)
        self.clock = clock
        self.config = config if config is not None else TcpConfig()
        self.gateway = to_ip(gateway) if gateway is not None else None
        self.netmask = netmask
        self._route = Route(self.ip, netmask, self.gateway)
        self.name = name
        #: the TCB type (TcpConnection's constructor and contract)
        self.tcb_class = tcb_class
        #: lazy TCB creation (see the module docstring): True, "always" or False; only
        #: with the default TCB type (a QuasiTcb promotes to a TcpConnection)
        if lazy_tcb not in (True, False, "always"):
            raise ValueError("lazy_tcb is True, False or 'always'")
        self.lazy_tcb = lazy_tcb if tcb_class is TcpConnection else False
        # Device offloads (a TAP with virtio-net headers): `send_segment(header, payload,
        # gso_size)` completes TCP checksums, and with `tso` cuts super-segments of up to
        # TSO_PAYLOAD_MAX bytes to the MSS; on receive, `csum_ok` per frame.
        self._send_segment = (device.send_segment if getattr(device, "offload", False)
                              and hasattr(device, "send_segment") else None)
        self.tso_max = TSO_PAYLOAD_MAX if tso and self._send_segment is not None else 0
        # A NIC dataplane in front of the device (AccelTCP): setup offload is possible.
        self.nic = bool(getattr(device, "nic", False))
        self._nic_syn_window = getattr(device, "syn_window", 0xFFFF)
        self._secret = secret if secret is not None else os.urandom(16)
        numbers = InitialNumbers(self._secret, self.ip)
        self._isn = isn if isn is not None else numbers.isn
        self._ts_offset = numbers.ts_offset
        #: re-raise exceptions from TCBs/app callbacks out of receive_frame/on_timer
        #: (tests); otherwise they are counted as drops["internal_error"].
        self.strict = strict
        self.last_exception = None
        #: driver hook, called when the earliest deadline moves earlier outside an entry.
        self.wakeup = None
        self._busy = False
        # The TCB an entry is driving right now: `_touch` leaves it alone, since the
        # entry re-arms it once the TCB returns (app calls made from its callbacks
        # would otherwise re-arm it once per call).
        self._entry_conn = None
        self._ident = 0
        self._send_frame = device.send

        # Counters: plain ints on the hot path (the short-lived connection's too),
        # slow-path ones in `_c`; `counters` builds the dict.
        self.drops = collections.Counter()
        self._c = collections.Counter()
        self._frames_in = self._bytes_in = self._frames_out = self._bytes_out = 0
        self._delivered = self._csum_trusted = 0
        self._syns_received = self._cookie_conns = self._quasi_born = 0
        self._closed = ClosedTcbStats()

        # The components (each module's docstring); the receive and output paths read
        # some of their dicts and heaps directly, aliased here.
        self._timers = TimerHeap(self._timer_earlier)
        self._heap = self._timers.heap
        self._timewait = TimeWaitTable()
        self._tw_fifo = self._timewait.fifos          # read on every next_deadline()
        self.arp = ArpCache(self.mac, self.ip, clock, arp_timeout, self._emit, self.drops,
                            self._c, self._arp_scheduled)
        self._arp = self.arp.entries
        self._arp_heap = self.arp.heap
        self._conns = conns = ConnTable(self._timers, self._arp, self._closed, self._c)
        self._table = conns.table
        self._embryonic = conns.embryonic
        self._parked = conns.parked
        self._splicing = conns.steered
        self._listen = ListenTable(
            self.ip, self._secret, self.config.ts_hz, self.drops, self._c,
            control=self._nic_control, reset=self._send_rst, synack=self._cookie_synack,
            cookie_child=self._cookie_child,
            max_syn_backlog=max_syn_backlog, syn_cookies=syn_cookies,
            synack_retries=synack_retries)
        self._listeners = self._listen.ports
        self._ports = PortTable(ephemeral, self._secret, self.ip, conns, self._timewait,
                                self._listeners)
        self.ephemeral = self._ports.ephemeral
        # The callbacks every TCB gets, bound once (not a new bound method per TCB).
        self._event_cb = conns.on_event
        self._promote_cb = self._on_promote
        self._tcbs = TcbFactory(self.ip, tcb_class, self.lazy_tcb, self.tso_max, self._isn,
                                self._ts_offset, self._route, self._output, self._event_cb,
                                self._c)
        #: teardown/splice offload policy and NIC accounting (host.offload)
        self.offload = NicOffload(self) if self.nic else None
        if self.offload is not None:
            self.offload.start()
        #: TCP Chimney partial offload (host.chimney); None without a NIC that runs it
        #: (``device.chimney``: the Python NIC's placements; not the XDP NIC)
        self.chimney = ChimneyHost(self) if self.nic and getattr(device, "chimney", False) \
            else None

    # ------------------------------------------------------------------ receive path
    def receive_frame(self, frame, csum_ok=False):
        """One frame from the device. Never raises (see `strict`). ``csum_ok``: the
        device vouches for the TCP checksum (verified by hardware, or a partial one from
        the local kernel), so it is not summed again."""
        self._frames_in += 1
        if frame.__class__ is not bytes:
            try:
                frame = bytes(frame)
            except (TypeError, ValueError):
                self.drops["eth_short"] += 1
                return
        self._bytes_in += len(frame)
        self._busy = True
        try:
            dst, src, ethertype = parse_ethernet(frame)
            if ethertype == ETHERTYPE_IPV4:
                seg = self._tcp_segment(frame, dst, csum_ok)
                if seg is None:
                    return
                key = frame[26:38]            # src-ip|dst-ip|sport|dport (no IP options)
                ip_src = key[:4]
                conn = self._table.get(key)
                if conn is not None:
                    self._delivered += 1
                    self._entry_conn = conn
                    conn.on_segment(seg, self.clock())
                    self._entry_conn = None
                    self._touch(conn)
                    return
                if self._splicing:
                    sp = self._splicing.get(key)
                    if sp is not None:
                        self._delivered += 1
                        self.offload.splice_segment(sp, key, frame, seg)
                        return
                if self._parked and key in self._parked:
                    self.drops["teardown_pending"] += 1
                    return
                off = self.offload
                if off is not None and off.spliced_lately and \
                        off.splice_late(key, frame, self.clock()):
                    self._delivered += 1
                    return
                if off is not None and off.splice_ended and \
                        off.splice_ended_late(key, self.clock()):
                    return
                self._segment_slow(key, ip_src, seg, src)
            elif ethertype == ETHERTYPE_ARP:
                if self.arp.receive(frame, dst):
                    self._delivered += 1
            elif ethertype == control.ETHERTYPE_NEW_CONNECTION and self.nic:
                self._new_connection(frame)
            elif ethertype in _NIC_REPORTS and self.nic:
                self.offload.on_frame(frame)
                self._delivered += 1          # a NIC report, taken (frames_in identity)
            elif ethertype == control.ETHERTYPE_CHIMNEY and self.chimney is not None:
                self.chimney.on_frame(frame)
                self._delivered += 1
            else:
                self.drops["ethertype_unsupported"] += 1
        except WireError as e:
            self.drops[e.reason] += 1
        except Exception as e:      # a bug in a TCB or an app callback, never bad input
            self._internal_error(e)
        finally:
            self._busy = False
            self._entry_conn = None

    def _internal_error(self, e):
        """An exception from a TCB or an app callback (a bug, never bad input): re-raised
        with `strict`, else counted as drops["internal_error"]."""
        self.last_exception = e
        if self.strict:
            raise e
        self.drops["internal_error"] += 1

    def _replay(self, frames):
        """Frames held back (a splice that did not happen) are received after all; their
        checksums were verified on arrival and they are not counted twice (in frames_in
        nor, since each was counted delivered when it was held, in frames_delivered)."""
        for frame in frames:
            self._frames_in -= 1
            self._bytes_in -= len(frame)
            self._delivered -= 1
            busy = self._busy
            self.receive_frame(frame, True)
            self._busy = busy

    def _segment_slow(self, key, src, seg, eth_src):
        now = self.clock()
        conn = self._embryonic.get(key)
        if conn is not None:
            # A child of a listener in SYN-RECEIVED. Linux's rule (tcp_check_req /
            # listen_overflow): with the accept queue full, the final ACK is dropped and
            # the handshake retried later, rather than completing a connection no one
            # can accept.
            lst = conn.owner.parent
            if (not seg.flags & RST and lst is not None
                    and len(lst.accept_queue) >= lst.backlog):
                self.drops["listen_overflow"] += 1
                return
            self._delivered += 1
            self._entry_conn = conn
            conn.on_segment(seg, now)
            self._entry_conn = None
            self._touch(conn)
            return
        if key in self._timewait.records:
            if self._timewait.segment(key, seg, now):
                self._delivered += 1
                return
            # RFC 6191: a new incarnation's SYN, counted once below (as delivered or drop)
            self._c["time_wait_reopened"] += 1
        flags = seg.flags
        if flags & RST:                              # RFC 9293 §3.10.7.1: never answer a RST
            self.drops["rst_no_connection"] += 1
            return
        if self._route.martian(src):
            self.drops["bad_src_addr"] += 1
            return
        lst = self._listeners.get(seg.dst_port)
        off = self.offload          # queued before the NIC took the flow? (host.offload)
        if off is not None and flags & ACK and not flags & SYN and off.late(key, now):
            return
        if not self._listen.segment(lst, key, src, seg, eth_src, now):
            return
        self._delivered += 1
        cfg = lst.config if lst.config is not None else self.config
        conn = self._tcbs.syn_child(lst, cfg, key, src, seg, eth_src, now)
        self._embryonic[key] = conn
        lst.syn_queue[conn] = None
        self._syns_received += 1
        self._entry_conn = conn
        try:
            conn.accept_syn(seg, now)
        finally:
            self._entry_conn = None
            # Events from here on. LISTEN -> SYN-RECEIVED concerns no one: the child has
            # no app yet, and the table only cares about its establishment or its end.
            conn.on_event = self._event_cb
        self._touch(conn)

    def _cookie_synack(self, eth_dst, src, seg, isn, options, window):
        """Answer SYN `seg` with a cookie SYN-ACK (host.listen), to the SYN's sender MAC
        as `_send_rst`: no ARP work for a (spoofed) source."""
        self._ident = ident = (self._ident + 1) & 0xFFFF
        self._delivered += 1
        self._emit(build_tcp_frame(eth_dst, self.mac, self.ip, src, ident, seg.dst_port,
                                   seg.src_port, isn, seq_add(seg.seq, 1), SYN | ACK, window,
                                   options, b""))

    def _tcp_segment(self, frame, dst, csum_ok):
        """IPv4 -> TCP of a frame addressed to us (its Ethernet header already read):
        the parsed segment, or None with the reason counted. IP options are rejected,
        so the addresses and ports sit at fixed offsets (bytes 26-37)."""
        if dst != self.mac and dst != BROADCAST_MAC:
            self.drops["not_for_us"] += 1
            return None
        ip_src, ip_dst, proto, _, _, _, _, total_length, _ = \
            parse_ipv4_fields(memoryview(frame)[ETH_HLEN:])
        if ip_dst != self.ip:
            self.drops["not_for_us"] += 1
            return None
        if proto != IPPROTO_TCP:
            self.drops["ip_proto_unsupported"] += 1
            return None
        end = ETH_HLEN + total_length
        if csum_ok:
            self._csum_trusted += 1
        # An MTU-sized segment as a bytes slice: the checksum reads it as one integer
        # (int.from_bytes would copy a memoryview first). A larger (LRO/GRO) one as a
        # memoryview: without verification it is never copied before the receive buffer.
        return parse_tcp(frame[34:end] if end <= 2048 else memoryview(frame)[34:end],
                         ip_src, ip_dst, not csum_ok)

    def _new_connection(self, frame):
        """A 0x090A frame from the NIC: a handshake it completed with a SYN cookie. The
        NIC checked the ACK's TCP checksum before checking its cookie (receive checksum
        offload), so it is not summed again."""
        hdr, frame = control.unwrap(frame)         # WireError: a ctl_* drop
        dst, src, _ = parse_ethernet(frame)
        seg = self._tcp_segment(frame, dst, True)
        if seg is None:
            return
        key = frame[26:38]
        ip_src = key[:4]
        conn = self._table.get(key)
        if conn is not None:                      # a retransmission still echoing the cookie
            self._delivered += 1
            self.deliver(conn, seg)
            return
        if key in self._parked:
            # Its TCB is offered to the NIC, which passed this up before it read the
            # offer: no second TCB for the 4-tuple (the peer retransmits).
            self.drops["teardown_pending"] += 1
            return
        lst = self._listeners.get(seg.dst_port)
        tw = self._timewait.records.get(key)
        if tw is not None and seg.flags & (SYN | RST | ACK) == ACK and tw.reopens(seg, True):
            # The NIC answered a new incarnation's SYN while we hold the old one's
            # TIME-WAIT (it does not know of it): the same RFC 6191 test as for a SYN.
            self._timewait.pop(key)
            self._c["time_wait_reopened"] += 1
            tw = None
        if (lst is None or not lst.offload_setup or seg.flags & (SYN | RST | ACK) != ACK
                or key in self._embryonic or tw is not None or self._route.martian(ip_src)):
            self._segment_slow(key, ip_src, seg, src)    # no new connection: as usual
            return
        if len(lst.accept_queue) >= lst.backlog:
            # The client believes it is connected: its retransmission (still echoing the
            # cookie TSval) comes back through the NIC as a new 0x090A.
            self.drops["listen_overflow"] += 1
            return
        self._cookie_conns += 1
        self._cookie_child(lst, key, ip_src, seg, hdr, self._nic_syn_window, self.clock())

    def _cookie_child(self, lst, key, ip_src, seg, hdr, syn_window, now):
        """The ESTABLISHED child of a handshake completed with a cookie -- the NIC's
        (0x090A) or ours (host.listen): `hdr` a NewConnection header, `seg` the ACK."""
        self._delivered += 1
        cfg = lst.config if lst.config is not None else self.config
        conn = self._tcbs.cookie_child(lst, cfg, key, ip_src, seg, hdr, syn_window, now,
                                       self.nic)
        self._table[key] = conn
        self._entry_conn = conn
        try:
            if conn.__class__ is QuasiTcb:
                self._quasi_born += 1
                conn.on_promote = self._promote_cb
                conn.start()
            else:
                conn.accept_cookie(seg, hdr, now, syn_window)
        finally:
            self._entry_conn = None
        self._touch(conn)

    def _on_promote(self, conn, reason):
        """A quasi-TCB became a full one (tcp.quasi): counted by reason."""
        self._c["tcb_promoted_" + reason] += 1

    def _send_rst(self, dst_ip, dst_mac, seg):
        """RFC 9293 §3.10.7.1: make the RST acceptable to the sender of `seg`."""
        if seg.flags & ACK:
            seq, ack, flags = seg.ack, 0, RST
        else:
            n = len(seg.payload) + (1 if seg.flags & SYN else 0) + (1 if seg.flags & FIN else 0)
            seq, ack, flags = 0, seq_add(seg.seq, n), RST | ACK
        # Answer the frame's sender MAC directly: it is the neighbour the segment came
        # through (the peer or the gateway), so no ARP is needed to reply.
        self._ident = ident = (self._ident + 1) & 0xFFFF
        frame = build_tcp_frame(dst_mac, self.mac, self.ip, dst_ip, ident, seg.dst_port,
                                seg.src_port, seq, ack, flags, 0, b"", b"")
        self._c["rsts_sent"] += 1
        self._emit(frame)

    # ------------------------------------------------------------------ output path
    def _output(self, conn, flags, seq, ack, window, options, payload):
        rec = conn.owner
        e = rec.arp
        if e is None or not e.live:
            e = rec.arp = self._arp.get(rec.nexthop)
        self._ident = ident = (self._ident + 1) & 0xFFFF
        if e is not None:
            e.used = True
            if payload and self._send_segment is not None:
                # The device completes the checksum (and cuts a super-segment to the MSS:
                # reserve the IP IDs of the frames it will make, as a TSO NIC does).
                mss = conn.mss
                n = len(payload)
                self._ident = (ident + (n - 1) // mss) & 0xFFFF
                hdr = build_tcp_header_partial(e.mac, self.mac, self.ip, rec.remote_ip, ident,
                                               rec.local_port, rec.remote_port, seq, ack,
                                               flags, window, options, n)
                self._frames_out += 1
                self._bytes_out += len(hdr) + n
                self._send_segment(hdr, payload, mss)
                return
            frame = build_tcp_frame(e.mac, self.mac, self.ip, rec.remote_ip, ident,
                                    rec.local_port, rec.remote_port, seq, ack, flags, window,
                                    options, payload)
            self._frames_out += 1
            self._bytes_out += len(frame)
            self._send_frame(frame)
            return
        frame = build_tcp_frame(ZERO_MAC, self.mac, self.ip, rec.remote_ip, ident,
                                rec.local_port, rec.remote_port, seq, ack, flags, window,
                                options, payload)
        self.arp.enqueue(rec.nexthop, frame)

    def _emit(self, frame):
        self._frames_out += 1
        self._bytes_out += len(frame)
        self._send_frame(frame)

    # ------------------------------------------------------------------ ARP (host.arp)
    def _arp_scheduled(self, deadline):
        """The ARP cache pushed `deadline`: wake the runner if it is now the earliest."""
        h, a = self._heap, self._arp_heap
        if ((not h or deadline <= h[0][0]) and (not a or deadline <= a[0][0])
                and not self._busy and self.wakeup is not None):
            self.wakeup()

    def arp_add(self, ip, mac):
        """Static neighbour entry (never expires, never overwritten by ARP)."""
        self.arp.add(to_ip(ip), to_mac(mac))

    def arp_del(self, ip):
        self.arp.remove(to_ip(ip))

    def arp_table(self):
        """{ip str: (mac str, 'static' | seconds to expiry)} for tests and stats."""
        return {ip: (mac_to_str(mac), exp) for ip, (mac, exp) in self.arp.table().items()}

    def arp_lookup(self, ip):
        """MAC (bytes) of a resolved neighbour, or None."""
        e = self._arp.get(to_ip(ip))
        return e.mac if e is not None else None

    # ------------------------------------------------------------------ connections
    def _touch(self, conn):
        """After any call into a TCB: drop it if closed, else re-arm its timer."""
        if conn is self._entry_conn:
            return                  # the running entry does it when the TCB returns
        if conn.owner.teardown_wait:
            self.offload.retry(conn)
            if conn.owner.key not in self._table:
                return              # offered: parked, out of the table and the timers
        if conn.closed:
            if not conn.owner.removed:
                self._conns.remove(conn)
            return
        if conn.state == _TIME_WAIT:
            self._enter_time_wait(conn)
            return
        d = conn.next_deadline()
        if d is not None:
            a = conn.owner.armed
            if a is None or d < a:
                self._timers.push(conn, d)

    def _enter_time_wait(self, conn):
        """Swap a TCB that reached TIME-WAIT for a compact record (host.timewait)."""
        key = conn.owner.key
        tw = conn.handoff_time_wait(self.clock())   # the TCB closes and leaves the table
        if not conn.owner.removed:
            self._conns.remove(conn)
        if self._timewait.add(key, tw) and not self._busy and self.wakeup is not None:
            if tw.expires <= self.next_deadline():     # the earliest deadline now
                self.wakeup()

    def attach(self, conn, handler, app=None):
        """Route `conn`'s events to `handler(conn)` (the app layer); `app` is its object."""
        rec = conn.owner
        rec.handler = handler
        rec.app = app
        ch = self.chimney
        if ch is not None and ch.auto:      # --offload chimney: the NIC runs the data path
            ch.auto_offload(conn)

    def connect(self, remote_ip, remote_port, config=None, local_port=None):
        """Active open (RFC 9293 §3.10.1): -> TcpConnection in SYN-SENT.

        Raises OSError: ENETUNREACH (no route), EADDRNOTAVAIL (4-tuple in use, TIME-WAIT
        included, or ephemeral ports exhausted), EINVAL (bad port).
        """
        rip = to_ip(remote_ip)
        if not 0 < remote_port <= 65535:
            raise oserror(errno.EINVAL, "remote port")
        nexthop = self._route.nexthop(rip)
        if nexthop is None or self._route.martian(rip):
            raise oserror(errno.ENETUNREACH)
        lport = self._ports.local_port(rip, remote_port, local_port)
        key = self._ports.key(rip, self.ip, remote_port, lport)
        if self._ports.in_use(key):
            raise oserror(errno.EADDRNOTAVAIL, "4-tuple in use")
        now = self.clock()
        conn = self._tcbs.active(config if config is not None else self.config, key, rip,
                                 lport, remote_port, nexthop, now)
        self._table[key] = conn
        self._c["conns_opened"] += 1
        conn.connect(now)
        self._touch(conn)
        return conn

    def free_port(self):
        """An ephemeral port that no listener, bound socket or connection uses."""
        return self._ports.any_free()

    def bind_port(self, port):
        """Reserve `port` (socket layer `bind`): ephemeral allocation skips it."""
        self._ports.bind(port)

    def unbind_port(self, port):
        """Release one reservation of `port` (socket layer close)."""
        self._ports.unbind(port)

    def port_users(self, port):
        """The connections whose local port is `port` (bind conflict checks)."""
        return self._ports.users(port)

    # App-side calls into a TCB: supply `now`, then re-arm / reap. Errors of the TCB
    # (`send` on a reset or closing connection) propagate to the caller. Called from the
    # app's event callback for the connection an entry is driving, they leave the
    # re-arming to that entry (the `_entry_conn` test of `_touch`, inline here).
    def send(self, conn, data):
        """Queue data -> bytes taken (0: buffer full). Raises ConnectionResetError /
        TimeoutError / ConnectionRefusedError after an error, BrokenPipeError after close."""
        ch = self.chimney
        if ch is not None and ch.owns(conn):          # the NIC runs it (host.chimney)
            return ch.send(conn, data)
        try:
            return conn.send(data, self.clock())
        finally:
            if conn is not self._entry_conn:
                self._touch(conn)

    def recv(self, conn, maxlen):
        ch = self.chimney
        if ch is not None and ch.owns(conn):          # the NIC runs it (host.chimney)
            return ch.recv(conn, maxlen)
        data = conn.recv(maxlen, self.clock())
        if conn is not self._entry_conn:
            self._touch(conn)
        return data

    def shutdown(self, conn):
        """Half-close: FIN after the queued data."""
        ch = self.chimney
        if ch is not None and ch.owns(conn):
            return ch.app_close(conn, "shutdown")
        if conn.state != states.CLOSED:
            conn.shutdown(self.clock())
        self._touch(conn)

    def close(self, conn):
        """Full close (FIN after queued data; RST if unread data, RFC 2525 §2.17). The
        TCB stays in the table until it is closed (FIN handshake, TIME-WAIT) -- or, with
        ``offload_teardown`` on a NIC, is handed to the NIC (``host.offload``)."""
        ch = self.chimney
        if ch is not None and ch.owns(conn):
            return ch.app_close(conn, "close")
        if conn.state != states.CLOSED:
            rec = conn.owner
            if rec.teardown_wait:
                return                     # closed already: waiting to be offered
            now = self.clock()
            if (rec.offload_teardown and self.nic and not conn.app_closed
                    and self.offload.teardown(conn, now)):
                return
            conn.close(now)
        if conn is not self._entry_conn:
            self._touch(conn)

    def nsplice(self, conn_c, conn_s, callback):
        """Have the NIC relay between conn_c (to a client) and conn_s (to a server) from
        now on (AccelTCP §4.3). -> splice id. Both connections leave the app at once:
        ``callback(control.SpliceClosed)`` when the spliced connection ends on the NIC
        (bytes and packets moved each way, how it ended), or
        ``callback(host.offload.SpliceFailed)`` if the NIC did not take it, and then
        both connections are the app's again. Raises OSError EOPNOTSUPP without a NIC."""
        if not self.nic:
            raise oserror(errno.EOPNOTSUPP, "no NIC to splice on")
        return self.offload.nsplice(conn_c, conn_s, callback)

    def abort(self, conn):
        """RST the connection (RFC 9293 §3.10.5 ABORT)."""
        ch = self.chimney
        if ch is not None and ch.owns(conn):
            return ch.app_close(conn, "abort")
        if conn.state != states.CLOSED:
            self._c["conns_aborted"] += 1
            conn.abort(self.clock())
        self._touch(conn)

    # ------------------------------------------------------------------ listeners
    def listen(self, port, backlog=128, config=None, ip=None, offload_setup=False,
               offload_teardown=False, defer_accept=False):
        """Passive open on `port` (0: pick an ephemeral port). -> Listener.

        `offload_setup`: on a NIC device, have the NIC answer this port's SYNs with SYN
        cookies (AccelTCP §4.1; advisory: ignored without a NIC). `offload_teardown`:
        accepted connections offer their teardown to the NIC on close (§4.2; advisory,
        per connection ``HostConn.offload_teardown``). `defer_accept`: with
        `offload_setup`, the NIC hands a connection up with the client's first segment
        carrying data (or FIN), not with the bare handshake ACK -- one frame less per
        connection, for protocols where the client speaks first (Linux's
        TCP_DEFER_ACCEPT; a client that waits for the server is never handed up).
        Raises OSError EADDRINUSE (already listening), EADDRNOTAVAIL (`ip` not ours).
        """
        return self._listen.open(self, port, backlog, config, ip, offload_setup and self.nic,
                                 offload_teardown, defer_accept)

    def _nic_control(self, msg):
        """A control frame to the NIC (not counted in frames_out: not for the wire)."""
        self._nic_send(msg.frame(self.mac, self.mac))

    def _nic_send(self, frame):
        self._c["nic_control_sent"] += 1
        self._send_frame(frame)

    def nic_lost(self):
        """The NIC is gone (its process died): the device now moves plain frames, and the
        stack does all the work itself from here on. Listeners stop being offloaded (SYNs
        now reach the host); a handshake the NIC answered with a cookie but had not yet
        completed meets no TCB here, so the client's connection is reset. Flows already
        handed to the NIC (teardown, splice) went with it; parked offers are closed by
        the host, pending splices fail (``host.offload``). -> what was lost, as
        ``NicOffload.lost`` counts it (None if the NIC was already gone)."""
        if not self.nic:
            return None
        self.nic = False
        self._c["nic_lost"] += 1
        self._listen.nic_lost()
        lost = self.offload.lost()
        if self.chimney is not None and len(self.chimney):   # chimney_lost, _keys_lost...
            lost.update(self.chimney.lost())
        self.chimney = None                   # no NIC to offload to any more
        return lost

    def chimney_offload(self, conn):
        """Hand ``conn``'s data path to the NIC (TCP Chimney, ``host.chimney``) -> True
        if offered; False without a NIC or when it is not eligible now."""
        return self.chimney is not None and self.chimney.offload(conn)

    def chimney_upload(self, conn):
        """Ask the NIC for an offloaded ``conn`` back -> True if asked."""
        return self.chimney is not None and self.chimney.upload(conn)

    def unlisten(self, listener):
        """Stop listening; children not yet accepted are reset (as Linux does on close)."""
        for conn in self._listen.close(listener):
            self.abort(conn)

    # ------------------------------------------------------------------ timers
    def _timer_earlier(self, deadline):
        """A connection's deadline became the timer heap's earliest: wake the driver if
        no entry is running (it re-reads next_deadline on return) and ARP's is later."""
        if not self._busy and self.wakeup is not None:
            if not self._arp_heap or deadline < self._arp_heap[0][0]:
                self.wakeup()

    def next_deadline(self):
        """Earliest pending deadline (possibly early: timers are invalidated lazily)."""
        h = self._heap
        a = self._arp_heap
        d = h[0][0] if h else None
        if a and (d is None or a[0][0] < d):
            d = a[0][0]
        if self._tw_fifo:
            t = self._timewait.deadline()
            if t is not None and (d is None or t < d):
                d = t
        return d

    def on_timer(self):
        """Fire everything due at clock(). Never raises (see `strict`)."""
        now = self.clock()
        self._busy = True
        try:
            fired = []
            for conn in self._timers.due(now):
                rec = conn.owner
                nd = conn.next_deadline()
                if nd is not None and nd <= now:
                    if (rec.embryonic and conn.state == _SYN_RECEIVED
                            and self._listen.syn_recv_expired(conn, rec.parent)):
                        self._conns.remove(conn)   # dropped as it is (nothing to send)
                        continue
                    self._entry_conn = conn
                    try:
                        conn.on_timer(now)
                    except Exception as e:
                        self._internal_error(e)
                    finally:
                        self._entry_conn = None
                fired.append(conn)
            for conn in fired:                     # re-arm after the loop: always terminates
                try:
                    self._touch(conn)
                except Exception as e:             # one TCB's bug must not stop the others' timers
                    self._internal_error(e)
            self._timers.drop_stale()              # no spurious wakeups
            if self._tw_fifo:
                self._timewait.reap(now)
            if self._arp_heap and self._arp_heap[0][0] <= now:
                self.arp.on_timer(now)
            if len(self._heap) > 64 + 2 * len(self._conns):
                self._conns.compact_timers()
        finally:
            self._busy = False

    # ------------------------------------------------------------------ views and stats
    #: SYN-flood settings (constructor arguments), kept by host.listen.ListenTable
    max_syn_backlog = _listen_setting("max_syn_backlog")
    syn_cookies = _listen_setting("syn_cookies")
    synack_retries = _listen_setting("synack_retries")

    @property
    def listeners(self):
        return types.MappingProxyType(self._listeners)

    @property
    def connections(self):
        """{(local ip, local port, remote ip, remote port): conn} of every TCB in the table."""
        return self._conns.view(self.ip)

    @property
    def time_wait(self):
        """{(local ip, local port, remote ip, remote port): TimeWait} of connections in
        TIME-WAIT (their TCBs are gone; see tcp.timewait)."""
        return self._timewait.view(self.ip)

    @property
    def counters(self):
        """Stack counters; TCB retransmission counters summed over closed + live conns."""
        closed = self._closed.fold()
        c = dict(self._c)
        if self._syns_received:
            c["syns_received"] = self._syns_received
        conns = self._conns
        c.update(conns_accepted=conns.accepted, cookie_conns=self._cookie_conns,
                 tcb_quasi=self._quasi_born, tcb_quasi_freed=conns.quasi_freed,
                 conns_closed=conns.closed, frames_in=self._frames_in, bytes_in=self._bytes_in,
                 frames_out=self._frames_out, bytes_out=self._bytes_out,
                 frames_delivered=self._delivered, conns_live=len(conns),
                 conns_embryonic=len(self._embryonic), conns_time_wait=len(self._timewait),
                 csum_trusted=self._csum_trusted)
        return stats.complete(c, closed, (self._table, self._embryonic))

    def stats(self):
        """JSON-able snapshot: counters, drops, TCB totals, listeners, connections, ARP."""
        return stats.snapshot(self, self._closed)

    def __repr__(self):
        return "HostStack(%s%s, %d conns, %d listeners)" % (
            self.name + " " if self.name else "", ip_to_str(self.ip),
            len(self._conns), len(self._listeners))
