"""Listeners of the host stack: passive opens, their queues, and SYN-flood defence.

Theory of operation
-------------------
A `Listener` is a passive open on one port (RFC 9293 §3.10.1 LISTEN; not a TCB). Its
children are TCBs made from SYNs to the port: in SYN-RECEIVED they sit in the
listener's `syn_queue` (and in the table of embryonic connections, `host.conns`); once
established they move to its `accept_queue` (`host.conns.ConnTable.established`), at
most `backlog` of them, until the application takes them (`Listener.accept`). A child
that dies before it is accepted leaves both (`Listener.forget`). Closing the listener
resets the children not yet accepted, as Linux does (`ListenTable.close` hands them
back).

`ListenTable` holds the listeners of one host by port and takes the segments that reach
a port with no TCB and no TIME-WAIT record (`segment`): a SYN to a listener makes a
child (SYN-RECEIVED); a SYN to a full accept queue is dropped (``listen_overflow``, as
Linux, also with cookies); an ACK, or any segment to a port nobody listens on, is reset
(RFC 9293 §3.10.7.1 CLOSED, §3.10.7.2 LISTEN "second check for an ACK") unless it
carries a valid cookie; anything else is dropped (``listen_no_syn``, §3.10.7.2
"fourth"). It answers and makes cookie children through the stack's callbacks, and hands
a SYN that makes a SYN-RECEIVED child back to the stack (its common path, inline). Its
policy:

* SYN floods (RFC 4987). A listener's SYN queue holds at most `max_syn_backlog`
  children. When it is full, a SYN is answered with a SYN cookie (`tcp.syncookie`, the
  host's own key) and leaves no state, as Linux with tcp_syncookies=1.
  An ACK with no TCB to a listener that sent cookies in the last validity window is
  checked as one and, if valid, becomes an ESTABLISHED child through
  ``accept_cookie`` -- the path of the NIC's cookies too (counters ``syn_cookies_sent``,
  ``syn_cookie_ack_ok``, ``syn_cookie_ack_bad``: forged, stale or garbled, reset like
  any ACK to a listener). Why a host cookie's ACK never meets the NIC's check:
  `tcp.syncookie`.
* SYN-RECEIVED lifetime (`syn_recv_expired`): children give up after `synack_retries`
  (5, Linux's, 63 s), after 2 (7 s) while the queue is more than half full, silently.
* Connection-setup offload (AccelTCP §4.1): a listener opened with ``offload_setup`` on
  a NIC is announced to it with a ``Listen`` control message (``Unlisten`` when it
  closes); the stack takes the NIC's completed handshakes (0x090A) as cookie children.

Every answer to a SYN -- SYN-ACK, cookie SYN-ACK, RST -- goes to the frame's sender MAC
(the stack builds the frames), so spoofed sources cost no ARP work. RSTs and martian
sources never reach the table: the stack drops them first.
"""

import collections
import errno
import hashlib

from ..tcp.syncookie import SynCookieJar
from ..wire import control
from ..wire.tcp import ACK, SYN, tcp_options
from .addr import ZERO_IP, oserror, to_ip

__all__ = ["Listener", "ListenTable", "LISTEN_DROP_REASONS", "SYNACK_RETRIES",
           "SYNACK_RETRIES_MIN", "syn_window"]

#: The drop reasons a ListenTable counts (see host.stack.HOST_DROP_REASONS).
LISTEN_DROP_REASONS = (
    "no_connection",          # non-RST segment, no TCB and no listener (or ACK to a
                              # listener): RST sent (RFC 9293 §3.10.7.1/.2)
    "listen_no_syn",          # neither SYN nor ACK nor RST to a listener (§3.10.7.2 "fourth")
    "listen_overflow",        # accept queue full: SYN, or the handshake's final ACK (or
                              # the NIC's NewConnection frame), dropped
    "syn_backlog_overflow",   # listener's SYN queue (embryonic children) full and no
                              # cookie possible (syn_cookies off, client MSS < 536)
)

# SYN-RECEIVED lifetime. RFC 4987 §3.4 (reducing the SYN-RECEIVED timer) as Linux does it:
# tcp_synack_retries = 5 (SYN-ACK at 0 s, again at 1, 3, 7, 15, 31 s, given up at 63 s);
# when the SYN queue is more than half full (reqsk_timer_handler's "reserve half of room
# for young embryos"), 2 (given up at 7 s). Linux lowers the limit step by step as the
# queue holds fewer young (never retransmitted) entries; a flood fills it with old ones,
# so we take its floor at once. Retry limit 2 still covers one lost SYN-ACK and one lost
# ACK of a real client, and with cookies a full queue no longer refuses anyone.
SYNACK_RETRIES = 5
SYNACK_RETRIES_MIN = 2


def syn_window(cfg):
    """The window of a SYN or SYN-ACK under `cfg` (SYN windows are unscaled)."""
    return cfg.rcv_buf if cfg.rcv_buf < 0xFFFF else 0xFFFF


class Listener:
    """A passive open on one port (RFC 9293 §3.10.1 LISTEN; the listener is not a TCB).

    `syn_queue`: embryonic children (SYN-RECEIVED), at most `stack.max_syn_backlog`.
    `accept_queue`: established children not yet accepted, at most `backlog`.
    `on_acceptable(listener)`: called when a child joins the accept queue.
    """

    __slots__ = ("stack", "port", "ip", "backlog", "config", "syn_queue", "accept_queue",
                 "on_acceptable", "closed", "app", "offload_setup", "offload_teardown",
                 "defer_accept", "cookies_until")

    def __init__(self, stack, port, backlog, config, ip, offload_setup=False,
                 offload_teardown=False, defer_accept=False):
        self.stack = stack
        self.port = port
        self.ip = ip
        self.backlog = backlog
        self.config = config
        self.syn_queue = {}                       # conn -> None (ordered set)
        self.accept_queue = collections.deque()
        self.on_acceptable = None
        self.closed = False
        self.app = None
        #: the NIC answers this listener's SYNs with cookies (AccelTCP §4.1)
        self.offload_setup = offload_setup
        #: children offer their teardown to the NIC (§4.2; TCP_TEARDOWN_OFFLOAD)
        self.offload_teardown = offload_teardown
        #: with offload_setup: the NIC hands a connection up with the client's first data
        #: (Listen defer_accept; TCP_DEFER_ACCEPT), for protocols where the client speaks
        #: first
        self.defer_accept = defer_accept
        #: ACKs without a TCB are checked as host SYN cookies until then (the last cookie
        #: SYN-ACK + the jar's validity window; Linux: tcp_synq_no_recent_overflow)
        self.cookies_until = float("-inf")

    def accept(self):
        """-> the oldest established child, or None. The child is the caller's now."""
        q = self.accept_queue
        if not q:
            return None
        conn = q.popleft()
        conn.owner.parent = None
        return conn

    def forget(self, conn):
        """`conn`, a child not yet accepted, is gone: out of both queues."""
        self.syn_queue.pop(conn, None)
        try:
            self.accept_queue.remove(conn)
        except ValueError:
            pass

    def __repr__(self):
        return "Listener(port=%d, backlog=%d, syn=%d, accept=%d%s)" % (
            self.port, self.backlog, len(self.syn_queue), len(self.accept_queue),
            ", closed" if self.closed else "")


class ListenTable:
    """The listeners of one host by port, and the segments for them without a TCB.

    `drops` and `counters` are the stack's Counters. The stack's callbacks:
    ``control(msg)`` sends a ``wire.control`` message to the NIC; ``reset(src, eth_src,
    seg)`` answers `seg` with a RST; ``synack(eth_src, src, seg, isn, options, window)``
    answers SYN `seg` with a cookie SYN-ACK; ``cookie_child(lst, key, src, seg, hdr,
    syn_window, now)`` makes and runs the ESTABLISHED child of a valid cookie ACK. The
    SYN-flood settings are the stack's constructor's.
    """

    __slots__ = ("ports", "ip", "max_syn_backlog", "syn_cookies", "synack_retries", "_jar",
                 "_drops", "_c", "_control", "_reset", "_synack", "_cookie_child")

    def __init__(self, ip, secret, ts_hz, drops, counters, *, control, reset, synack,
                 cookie_child, max_syn_backlog, syn_cookies, synack_retries):
        self.ports = {}           # port -> Listener
        self.ip = ip
        self.max_syn_backlog = max_syn_backlog
        #: answer SYNs with cookies when the SYN queue is full (Linux tcp_syncookies=1)
        self.syn_cookies = syn_cookies
        #: SYN-ACK retransmissions before a child is given up (Linux tcp_synack_retries;
        #: at most the TCB's own config.syn_retries, 2 under pressure)
        self.synack_retries = synack_retries
        # Host SYN cookies (tcp.syncookie): a key of their own, derived from the secret.
        self._jar = SynCookieJar(hashlib.blake2s(b"syncookie", key=secret).digest(),
                                 ts_hz=ts_hz)
        self._drops = drops
        self._c = counters
        self._control = control
        self._reset = reset
        self._synack = synack
        self._cookie_child = cookie_child

    def open(self, stack, port, backlog, config, ip, offload_setup, offload_teardown,
             defer_accept=False):
        """A new Listener on `port` of `stack` (0: ``stack.free_port()``); `offload_setup`
        only on a NIC. Raises OSError EINVAL, EADDRINUSE, EADDRNOTAVAIL (`ip` not ours)."""
        if ip is not None:
            ipb = to_ip(ip)
            if ipb != self.ip and ipb != ZERO_IP:
                raise oserror(errno.EADDRNOTAVAIL)
        if port == 0:
            port = stack.free_port()
        if not 0 < port <= 65535:
            raise oserror(errno.EINVAL, "port")
        if port in self.ports:
            raise oserror(errno.EADDRINUSE)
        lst = self.ports[port] = Listener(stack, port, max(0, backlog), config, ip,
                                          bool(offload_setup), bool(offload_teardown),
                                          bool(defer_accept))
        if lst.offload_setup:
            cfg = config if config is not None else stack.config
            self._control(control.Listen(self._nic_ip(ip), port, cfg.mss, cfg.wscale,
                                         cfg.sack, cfg.timestamps, lst.defer_accept))
        return lst

    def close(self, listener):
        """Stop `listener` -> its children not yet accepted (the caller resets them)."""
        if self.ports.get(listener.port) is listener:
            del self.ports[listener.port]
        if listener.offload_setup and not listener.closed:
            self._control(control.Unlisten(self._nic_ip(listener.ip), listener.port))
        listener.closed = True
        children = list(listener.syn_queue) + list(listener.accept_queue)
        listener.syn_queue.clear()
        listener.accept_queue.clear()
        for conn in children:
            conn.owner.parent = None
        return children

    @staticmethod
    def _nic_ip(ip):
        return to_ip(ip) if ip is not None else ZERO_IP

    def nic_lost(self):
        """The NIC is gone: no listener is offloaded any more."""
        for lst in self.ports.values():
            lst.offload_setup = False

    def segment(self, lst, key, src, seg, eth_src, now):
        """A segment for `key` with no TCB nor TIME-WAIT record, not a RST, from `src`
        (not martian) via MAC `eth_src`, to our port ``seg.dst_port``: `lst` is its
        listener, or None. Answered through the callbacks, or dropped -> None; True: a
        SYN the stack makes a SYN-RECEIVED child of (the common case, kept inline)."""
        flags = seg.flags
        if lst is None or flags & ACK:
            # A listener that sent cookies lately takes an ACK with no TCB as a cookie's
            # (Linux cookie_v4_check); one that does not verify is reset below.
            if lst is not None and not flags & SYN and lst.cookies_until >= now:
                hdr = self._cookie_ack(src, seg, now)
                if hdr is not None:
                    if len(lst.accept_queue) >= lst.backlog:
                        self._drops["listen_overflow"] += 1   # the client retransmits
                        return
                    self._c["syn_cookie_ack_ok"] += 1
                    cfg = lst.config if lst.config is not None else lst.stack.config
                    self._cookie_child(lst, key, src, seg, hdr, syn_window(cfg), now)
                    return
            # §3.10.7.1 (CLOSED) and §3.10.7.2 (LISTEN, "second check for an ACK")
            self._reset(src, eth_src, seg)
            self._drops["no_connection"] += 1
            return
        if not flags & SYN:
            self._drops["listen_no_syn"] += 1     # §3.10.7.2 "fourth, other text or control"
            return
        if len(lst.accept_queue) >= lst.backlog:
            self._drops["listen_overflow"] += 1   # as Linux, also with cookies
            return
        if len(lst.syn_queue) >= self.max_syn_backlog:
            # RFC 4987 §3.6 / Linux tcp_syncookies=1: a full SYN queue answers with a
            # cookie and keeps nothing. Not §3.5's recycling of the oldest child: a flood
            # faster than queue size / handshake RTT would evict real clients' children
            # before their ACKs arrive; a cookie cannot be evicted.
            synack = self._cookie_synack(lst, src, seg, now) if self.syn_cookies else None
            if synack is None:
                self._drops["syn_backlog_overflow"] += 1
                return
            self._synack(eth_src, src, seg, *synack)
            return
        return True

    def syn_recv_expired(self, conn, lst):
        """Has SYN-RECEIVED child `conn` of `lst` (None: orphaned) used up its SYN-ACK
        retries? Then it is to be dropped without a word, as Linux frees a request sock:
        no RST toward a source that never answered (counted here, removed by the
        caller)."""
        limit = self.synack_retries
        if (lst is not None and 2 * len(lst.syn_queue) > self.max_syn_backlog
                and limit > SYNACK_RETRIES_MIN):
            limit = SYNACK_RETRIES_MIN
        if getattr(conn, "retries", 0) < limit:
            return False
        self._c["syn_recv_expired"] += 1
        self._c["conns_timeout"] += 1
        return True

    def _cookie_synack(self, lst, src, seg, now):
        """The SYN-ACK answering SYN `seg` from `src` with a cookie, keeping no state:
        -> (isn, options, window), or None when the client's MSS is below every class
        (the SYN is dropped). With the client's timestamps the options ride in our TSval;
        without, only the MSS class fits (as Linux): no window scaling or SACK then."""
        cfg = lst.config if lst.config is not None else lst.stack.config
        ts = cfg.timestamps and seg.tsval is not None
        ws = seg.wscale
        if ws is not None and ws > 14:
            ws = 14                                   # RFC 7323 §2.3
        jar = self._jar
        cookie = jar.make(self.ip, seg.dst_port, src, seg.src_port, seg.seq, seg.mss, ws,
                          seg.sack_permitted, now, ts)
        if cookie is None:
            return None
        isn, tsval = cookie
        # Our side exactly as the TCB's SYN-ACK offers it, so accept_cookie's negotiation
        # from cfg and the cookie's options agree with what the client saw.
        our_ws = cfg.wscale if ts and ws is not None and cfg.wscale is not None else None
        opts = tcp_options(mss=cfg.mss, wscale=None if our_ws is None else min(our_ws, 14),
                           sack_permitted=ts and cfg.sack and seg.sack_permitted,
                           timestamps=(tsval, seg.tsval) if ts else None)
        lst.cookies_until = now + jar.window * jar.tick
        self._c["syn_cookies_sent"] += 1
        return isn, opts, syn_window(cfg)

    def _cookie_ack(self, src, seg, now):
        """An ACK to a listener with no TCB, while it sends cookies: -> the NewConnection header
        its cookie encodes (what the child's ``accept_cookie`` takes), or None, counted,
        when it carries no valid cookie (the caller resets it, as Linux does)."""
        jar = self._jar
        tsecr = seg.tsecr
        if tsecr is None:
            opts = jar.check_no_ts(self.ip, seg.dst_port, src, seg.src_port, seg.seq,
                                   seg.ack, now)
        else:
            opts = jar.check(self.ip, seg.dst_port, src, seg.src_port, seg.seq, seg.ack,
                             tsecr, now)
        if opts is None:
            self._c["syn_cookie_ack_bad"] += 1
            return None
        return control.NewConnection(opts.mss, opts.wscale, opts.sack_ok, tsecr is not None,
                                     tsecr if tsecr is not None else 0)
