"""mTCP-style socket API with epoll over a HostStack (Linux constants and errno).

Everything is non-blocking: calls that would block raise `BlockingIOError` (EAGAIN,
EINPROGRESS), and `epoll_wait` returns at once; the driver (the loop running the stack)
pumps. Errors are `OSError` with the errno Linux gives in the same situation.

Epoll follows Linux's model (fs/eventpoll.c): every registration (an "item") sits on its
epoll's ready list after a wakeup; `epoll_wait` polls each listed item's socket
(`tcp_poll` rules), reports `mask & events`, and puts level-triggered items back on the
list while edge-triggered ones wait for the next wakeup. Wakeups come from the TCB's
`on_event`, keyed like Linux's: a state change wakes every item; new in-order data wakes
EPOLLIN items; freed send space wakes EPOLLOUT items only after a write ran out of space
(SOCK_NOSPACE); a new child on a listener wakes EPOLLIN items.
"""

import errno
import heapq
import os
import struct

from ..tcp import states
from ..wire.ipv4 import ip_to_str
from .stack import to_ip

__all__ = [
    "SocketAPI", "SockOpt", "register_sockopt", "SOCKOPTS",
    "SOL_SOCKET", "SO_REUSEADDR", "SO_ERROR", "SO_SNDBUF", "SO_RCVBUF", "SO_LINGER",
    "SO_KEEPALIVE", "IPPROTO_TCP", "TCP_NODELAY", "TCP_MAXSEG", "TCP_INFO", "TCP_SETUP_OFFLOAD",
    "TCP_TEARDOWN_OFFLOAD", "TCP_CHIMNEY_OFFLOAD", "TCP_DEFER_ACCEPT",
    "SHUT_RD", "SHUT_WR", "SHUT_RDWR",
    "EPOLLIN", "EPOLLPRI", "EPOLLOUT", "EPOLLERR", "EPOLLHUP", "EPOLLRDNORM", "EPOLLRDBAND",
    "EPOLLWRNORM", "EPOLLWRBAND", "EPOLLRDHUP", "EPOLLEXCLUSIVE", "EPOLLWAKEUP",
    "EPOLLONESHOT", "EPOLLET", "EPOLL_CTL_ADD", "EPOLL_CTL_DEL", "EPOLL_CTL_MOD",
]

# <sys/socket.h>, <netinet/tcp.h> (Linux values)
SOL_SOCKET = 1
SO_REUSEADDR = 2
SO_ERROR = 4
SO_SNDBUF = 7
SO_RCVBUF = 8
SO_KEEPALIVE = 9
SO_LINGER = 13
IPPROTO_TCP = 6
TCP_NODELAY = 1
TCP_MAXSEG = 2
TCP_INFO = 11
TCP_SETUP_OFFLOAD = 0x4001    # AccelTCP §5.1: the NIC answers this listener's SYNs (cookies)
TCP_TEARDOWN_OFFLOAD = 0x4002  # §4.2: hand the connection to the NIC on close (advisory)
TCP_CHIMNEY_OFFLOAD = 0x4003  # TCP Chimney: 1 hands the data path to the NIC, 0 takes it back
TCP_DEFER_ACCEPT = 9          # Linux's: with setup offload, the NIC hands up on first data
SHUT_RD, SHUT_WR, SHUT_RDWR = 0, 1, 2
SOMAXCONN = 4096
TCP_MIN_MSS = 88          # Linux include/net/tcp.h
SOCK_MIN_BUF = 2048

# <sys/epoll.h>
EPOLLIN = 0x001
EPOLLPRI = 0x002
EPOLLOUT = 0x004
EPOLLERR = 0x008
EPOLLHUP = 0x010
EPOLLRDNORM = 0x040
EPOLLRDBAND = 0x080
EPOLLWRNORM = 0x100
EPOLLWRBAND = 0x200
EPOLLRDHUP = 0x2000
EPOLLEXCLUSIVE = 1 << 28
EPOLLWAKEUP = 1 << 29
EPOLLONESHOT = 1 << 30
EPOLLET = 1 << 31
EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD = 1, 2, 3
_EP_PRIVATE_BITS = EPOLLWAKEUP | EPOLLONESHOT | EPOLLET | EPOLLEXCLUSIVE
_WAKE_ALL = -1            # a wakeup without a key (sk_state_change): every item

_IN = EPOLLIN | EPOLLRDNORM
_OUT = EPOLLOUT | EPOLLWRNORM
_HANDSHAKE = (states.SYN_SENT, states.SYN_RECEIVED)
_SENDING = (states.ESTABLISHED, states.CLOSE_WAIT)
_ERRNO = {"reset": errno.ECONNRESET, "refused": errno.ECONNREFUSED, "timeout": errno.ETIMEDOUT}
_EXC_ERRNO = ((BrokenPipeError, errno.EPIPE), (ConnectionResetError, errno.ECONNRESET),
              (ConnectionRefusedError, errno.ECONNREFUSED), (TimeoutError, errno.ETIMEDOUT))
_LINGER = struct.Struct("ii")


def _err(code):
    if code == errno.EAGAIN or code == errno.EINPROGRESS or code == errno.EALREADY:
        return BlockingIOError(code, os.strerror(code))
    return OSError(code, os.strerror(code))


class _Socket:
    __slots__ = ("fd", "config", "lport", "bound", "reuseaddr", "linger", "listener", "conn",
                 "pending_err", "err_seen", "shut_rd", "shut_wr", "nospace", "epitems",
                 "last_state", "last_rcv", "last_wr", "last_err", "extra")

    def __init__(self, fd, config):
        self.fd = fd
        self.config = config          # TcpConfig (copy-on-write: may be shared)
        self.lport = 0
        self.bound = False            # holds lport in the API's port table
        self.reuseaddr = False
        self.linger = None            # (onoff, seconds) or None
        self.listener = None
        self.conn = None
        self.pending_err = 0          # Linux sk_err: reported once (read/write/SO_ERROR)
        self.err_seen = False
        self.shut_rd = False
        self.shut_wr = False
        self.nospace = False          # a write ran out of space (Linux SOCK_NOSPACE)
        self.epitems = []
        self.last_state = None
        self.last_rcv = None
        self.last_wr = False
        self.last_err = None
        self.extra = {}               # room for offload flags and other per-socket options


class _Epoll:
    __slots__ = ("fd", "items", "ready")

    def __init__(self, fd):
        self.fd = fd
        self.items = {}               # socket fd -> _EpItem
        self.ready = {}               # ordered set of _EpItem (the ready list)


class _EpItem:
    __slots__ = ("ep", "sock", "events", "queued")

    def __init__(self, ep, sock, events):
        self.ep = ep
        self.sock = sock
        self.events = events
        self.queued = False


class SockOpt:
    """One socket option: `get(api, sock) -> value`, `set(api, sock, value)`."""

    __slots__ = ("level", "opt", "name", "get", "set")

    def __init__(self, level, opt, name, get=None, set=None):
        self.level = level
        self.opt = opt
        self.name = name
        self.get = get
        self.set = set


#: (level, optname) -> SockOpt. Extend with `register_sockopt`.
SOCKOPTS = {}


def register_sockopt(level, opt, name, get=None, set=None):
    """Add (or replace) a socket option. `set` may raise OSError (EINVAL...)."""
    SOCKOPTS[(level, opt)] = o = SockOpt(level, opt, name, get, set)
    return o


class SocketAPI:
    """The socket/epoll calls over one HostStack. File descriptors are small ints (the
    lowest free one, from 3), shared by sockets and epolls as in Linux.

    `on_ready(epfd)`: optional hook called when an epoll's ready list becomes non-empty
    (lets a cooperative driver schedule its `epoll_wait` pump).
    """

    def __init__(self, stack):
        self.stack = stack
        self.on_ready = None
        self._fds = {}
        self._free = []
        self._next_fd = 3
        self._ports = {}              # port -> [sockets bound or connected on it]

    # ------------------------------------------------------------------ fds
    def _alloc(self, obj_factory):
        fd = heapq.heappop(self._free) if self._free else self._next_fd
        if fd == self._next_fd:
            self._next_fd += 1
        obj = obj_factory(fd)
        self._fds[fd] = obj
        return obj

    def _release(self, fd):
        del self._fds[fd]
        heapq.heappush(self._free, fd)

    def _sock(self, fd):
        s = self._fds.get(fd)
        if s.__class__ is _Socket:
            return s
        raise _err(errno.EBADF if s is None else errno.ENOTSOCK)

    def socket(self):
        """A new TCP socket (non-blocking). -> fd"""
        cfg = self.stack.config
        return self._alloc(lambda fd: _Socket(fd, cfg)).fd

    # ------------------------------------------------------------------ addressing
    def _port_take(self, s, port):
        s.lport = port
        s.bound = True
        self._ports.setdefault(port, []).append(s)
        self.stack.bind_port(port)

    def _port_drop(self, s):
        if s.bound:
            s.bound = False
            lst = self._ports.get(s.lport)
            if lst is not None:
                lst.remove(s)
                if not lst:
                    del self._ports[s.lport]
            self.stack.unbind_port(s.lport)

    def _port_conflict(self, s, port):
        """Linux inet_csk_bind_conflict, simplified to one address: SO_REUSEADDR on both
        sides allows sharing unless the other is listening."""
        if port in self.stack.listeners:
            return True
        owned = set()
        for o in self._ports.get(port, ()):
            if o is s:
                continue
            if o.conn is not None:
                owned.add(o.conn)
            if not (s.reuseaddr and o.reuseaddr and o.listener is None):
                return True
        if not s.reuseaddr:
            for conn in self.stack.port_users(port):
                if conn not in owned:
                    return True       # e.g. a TIME-WAIT or orphaned connection
        return False

    @staticmethod
    def _addr(addr):
        try:
            ip, port = addr
            ipb = to_ip(ip)
            port = int(port)
        except (TypeError, ValueError):
            raise _err(errno.EINVAL) from None
        if not 0 <= port <= 65535:
            raise _err(errno.EINVAL)
        return ipb, port

    def bind(self, fd, addr):
        s = self._sock(fd)
        ipb, port = self._addr(addr)
        if s.bound or s.listener is not None or s.conn is not None:
            raise _err(errno.EINVAL)
        if ipb != self.stack.ip and ipb != b"\0\0\0\0":
            raise _err(errno.EADDRNOTAVAIL)
        if port == 0:
            while True:
                port = self.stack.free_port()
                if not self._port_conflict(s, port):
                    break
        elif self._port_conflict(s, port):
            raise _err(errno.EADDRINUSE)
        self._port_take(s, port)

    def getsockname(self, fd):
        s = self._sock(fd)
        ip = "0.0.0.0" if s.lport == 0 else ip_to_str(self.stack.ip)
        return (ip, s.lport)

    def getpeername(self, fd):
        s = self._sock(fd)
        c = s.conn
        if c is None or c.state == states.CLOSED or c.state in _HANDSHAKE:
            raise _err(errno.ENOTCONN)
        return (ip_to_str(c.remote_ip), c.remote_port)

    # ------------------------------------------------------------------ passive open
    def listen(self, fd, backlog=128):
        s = self._sock(fd)
        if s.conn is not None:
            raise _err(errno.EINVAL)
        backlog = int(backlog)
        if backlog < 0 or backlog > SOMAXCONN:
            backlog = SOMAXCONN
        backlog = max(backlog, 1)     # Linux admits backlog+1; we admit max(backlog, 1)
        if s.listener is not None:
            s.listener.backlog = backlog          # Linux: listen() again changes backlog
            return
        if not s.bound:
            self.bind(fd, ("0.0.0.0", 0))
        for o in self._ports.get(s.lport, ()):
            if o is not s and o.listener is not None:
                raise _err(errno.EADDRINUSE)
        lst = self.stack.listen(s.lport, backlog, config=s.config,
                                offload_setup=s.extra.get("setup_offload", False),
                                offload_teardown=s.extra.get("teardown_offload", False),
                                defer_accept=s.extra.get("defer_accept", False))
        lst.app = s
        lst.on_acceptable = self._listener_event
        s.listener = lst

    def _listener_event(self, lst):
        s = lst.app
        if s is not None and s.epitems:
            self._wake(s, _IN)

    def accept(self, fd):
        """-> (fd, (ip, port)) of an established connection; EAGAIN when none."""
        s = self._sock(fd)
        lst = s.listener
        if lst is None:
            raise _err(errno.EINVAL)
        conn = lst.accept()
        if conn is None:
            raise _err(errno.EAGAIN)
        c = self._alloc(lambda nfd: _Socket(nfd, conn.config))
        c.lport = conn.local_port
        c.reuseaddr = s.reuseaddr
        c.linger = s.linger
        if "teardown_offload" in s.extra:                # inherited, as in Linux
            c.extra["teardown_offload"] = s.extra["teardown_offload"]
        self._adopt(c, conn)
        return c.fd, (ip_to_str(conn.remote_ip), conn.remote_port)

    # ------------------------------------------------------------------ active open
    def connect(self, fd, addr):
        """Non-blocking: raises BlockingIOError(EINPROGRESS); completion shows as EPOLLOUT,
        failure as EPOLLERR + SO_ERROR."""
        s = self._sock(fd)
        if s.listener is not None:
            raise _err(errno.EISCONN)
        conn = s.conn
        if conn is not None:
            self._sync_err(s)
            if conn.state in _HANDSHAKE:
                raise _err(errno.EALREADY)
            if s.pending_err:
                e = s.pending_err
                s.pending_err = 0
                self._detach(s)              # a later connect() starts afresh
                raise _err(e)
            if conn.state != states.CLOSED or not s.err_seen:
                raise _err(errno.EISCONN)
            self._detach(s)
        rip, rport = self._addr(addr)
        if rport == 0:
            raise _err(errno.ECONNREFUSED)
        conn = self.stack.connect(rip, rport, config=s.config,
                                  local_port=s.lport if s.bound else None)
        if not s.bound:
            self._port_take(s, conn.local_port)
        self._adopt(s, conn)
        raise _err(errno.EINPROGRESS)

    def _adopt(self, s, conn):
        s.conn = conn
        s.pending_err = 0
        s.err_seen = False
        s.shut_rd = s.shut_wr = s.nospace = False
        s.last_state = conn.state
        s.last_rcv = conn.rcv_nxt
        s.last_wr = conn.writable
        s.last_err = conn.error
        self.stack.attach(conn, self._conn_event, s)

    def _detach(self, s):
        conn = s.conn
        if conn is not None:
            rec = conn.owner
            if rec is not None and rec.app is s:
                self.stack.attach(conn, None, None)
            s.conn = None

    # ------------------------------------------------------------------ data
    def read(self, fd, n=65536):
        """Up to n bytes; b"" at EOF; EAGAIN when nothing yet; the pending error once."""
        s = self._sock(fd)
        conn = s.conn
        if conn is None:
            raise _err(errno.ENOTCONN)
        if n < 0:
            raise _err(errno.EINVAL)
        if n and conn.rcvbuf:
            return self.stack.recv(conn, n)
        self._sync_err(s)
        if s.pending_err:
            e = s.pending_err
            s.pending_err = 0
            raise _err(e)
        if n == 0 or conn.eof or conn.state == states.CLOSED or s.shut_rd:
            return b""
        raise _err(errno.EAGAIN)

    def write(self, fd, data):
        """-> bytes taken (maybe fewer than offered); EAGAIN when the buffer is full."""
        s = self._sock(fd)
        conn = s.conn
        if conn is None:
            raise _err(errno.EPIPE)          # Linux tcp_sendmsg on an unconnected socket
        self._sync_err(s)
        if s.pending_err:
            e = s.pending_err
            s.pending_err = 0
            raise _err(e)
        st = conn.state
        if st in _HANDSHAKE:
            raise _err(errno.EAGAIN)
        if s.shut_wr or conn.fin_queued or st not in _SENDING:
            raise _err(errno.EPIPE)
        if not data:
            return 0
        try:
            n = self.stack.send(conn, data)
        except OSError as e:
            for cls, code in _EXC_ERRNO:
                if isinstance(e, cls):
                    raise _err(code) from None
            raise
        if n < len(data):
            s.nospace = True
            if n == 0:
                raise _err(errno.EAGAIN)
        return n

    def shutdown(self, fd, how=SHUT_WR):
        s = self._sock(fd)
        if how not in (SHUT_RD, SHUT_WR, SHUT_RDWR):
            raise _err(errno.EINVAL)
        if s.listener is not None:
            if how != SHUT_WR:                # Linux: SHUT_RD on a listener stops it
                self._unlisten(s)
            return
        conn = s.conn
        if conn is None or conn.state == states.CLOSED:
            raise _err(errno.ENOTCONN)
        if how != SHUT_WR:
            s.shut_rd = True
        if how != SHUT_RD and not s.shut_wr:
            s.shut_wr = True
            self.stack.shutdown(conn)
        self._wake(s, _WAKE_ALL)

    def close(self, fd):
        """Release fd. A connection is closed gracefully (FIN; RST if unread data or
        SO_LINGER with a zero timeout) and lingers in the stack until it is done."""
        obj = self._fds.get(fd)
        if obj is None:
            raise _err(errno.EBADF)
        if obj.__class__ is _Epoll:
            for item in obj.items.values():
                item.sock.epitems.remove(item)
            obj.items.clear()
            obj.ready.clear()
            self._release(fd)
            return
        s = obj
        for item in s.epitems:
            ep = item.ep
            ep.items.pop(s.fd, None)
            ep.ready.pop(item, None)
        s.epitems = []
        if s.listener is not None:
            self._unlisten(s)
        conn = s.conn
        if conn is not None:
            self._detach(s)
            if s.linger is not None and s.linger[0] and s.linger[1] == 0:
                self.stack.abort(conn)
            else:
                # TCP_TEARDOWN_OFFLOAD: advisory; never with SO_LINGER (§4.2)
                conn.owner.offload_teardown = bool(
                    s.extra.get("teardown_offload", False) and s.linger is None)
                self.stack.close(conn)
        self._port_drop(s)
        self._release(fd)

    def _unlisten(self, s):
        lst = s.listener
        s.listener = None
        lst.on_acceptable = None
        lst.app = None
        self.stack.unlisten(lst)

    # ------------------------------------------------------------------ errors
    @staticmethod
    def _sync_err(s):
        conn = s.conn
        if conn is not None and not s.err_seen and conn.error is not None:
            s.err_seen = True
            s.pending_err = _ERRNO.get(conn.error, errno.EIO)

    # ------------------------------------------------------------------ options
    def setsockopt(self, fd, level, opt, value):
        s = self._sock(fd)
        o = SOCKOPTS.get((level, opt))
        if o is None or o.set is None:
            raise _err(errno.ENOPROTOOPT)
        o.set(self, s, value)

    def getsockopt(self, fd, level, opt):
        s = self._sock(fd)
        o = SOCKOPTS.get((level, opt))
        if o is None or o.get is None:
            raise _err(errno.ENOPROTOOPT)
        return o.get(self, s)

    @staticmethod
    def set_config(s, live=False, **changes):
        """Copy-on-write update of a socket's TcpConfig; `live` also updates its TCB
        (the TCB reads `config` fields such as nodelay and the buffer sizes per call)."""
        s.config = s.config.copy(**changes)
        if s.listener is not None:
            s.listener.config = s.config
        if live and s.conn is not None:
            s.conn.config = s.conn.config.copy(**changes)

    # ------------------------------------------------------------------ epoll
    def epoll_create(self, size=1):
        if size <= 0:
            raise _err(errno.EINVAL)
        return self._alloc(_Epoll).fd

    def _epoll(self, ep):
        e = self._fds.get(ep)
        if e.__class__ is _Epoll:
            return e
        raise _err(errno.EBADF if e is None else errno.EINVAL)

    def epoll_ctl(self, ep, op, fd, events=0):
        e = self._epoll(ep)
        target = self._fds.get(fd)
        if target is None:
            raise _err(errno.EBADF)
        if fd == ep or target.__class__ is not _Socket:
            raise _err(errno.EINVAL)          # nested epoll is not supported here
        item = e.items.get(fd)
        if op == EPOLL_CTL_ADD:
            if item is not None:
                raise _err(errno.EEXIST)
            item = e.items[fd] = _EpItem(e, target, (events | EPOLLERR | EPOLLHUP) & 0xFFFFFFFF)
            target.epitems.append(item)
        elif op == EPOLL_CTL_MOD:
            if item is None:
                raise _err(errno.ENOENT)
            item.events = (events | EPOLLERR | EPOLLHUP) & 0xFFFFFFFF
        elif op == EPOLL_CTL_DEL:
            if item is None:
                raise _err(errno.ENOENT)
            del e.items[fd]
            e.ready.pop(item, None)
            target.epitems.remove(item)
            return
        else:
            raise _err(errno.EINVAL)
        if self._poll(target) & item.events:  # ep_insert / ep_modify poll once
            self._queue(item)

    def epoll_wait(self, ep, maxevents=64):
        """-> [(fd, events)], at most maxevents; never blocks."""
        e = self._epoll(ep)
        if maxevents <= 0:
            raise _err(errno.EINVAL)
        out = []
        again = []
        ready = e.ready
        while ready and len(out) < maxevents:
            item = next(iter(ready))
            del ready[item]
            item.queued = False
            revents = self._poll(item.sock) & item.events
            if not revents:
                continue
            out.append((item.sock.fd, revents))
            if item.events & EPOLLONESHOT:
                item.events &= _EP_PRIVATE_BITS       # disarmed until EPOLL_CTL_MOD
            elif not item.events & EPOLLET:
                again.append(item)                   # level-triggered: stays listed
        for item in again:
            self._queue(item)
        return out

    def _queue(self, item):
        if not item.queued:
            item.queued = True
            ready = item.ep.ready
            was_empty = not ready
            ready[item] = None
            if was_empty and self.on_ready is not None:
                self.on_ready(item.ep.fd)

    def _wake(self, s, key):
        for item in s.epitems:
            ev = item.events
            if not ev & ~_EP_PRIVATE_BITS:
                continue                             # EPOLLONESHOT, disarmed
            if key == _WAKE_ALL or key & ev:
                self._queue(item)

    def _conn_event(self, conn):
        """The TCB's on_event for a socket: derive Linux's wakeup key, wake epoll items."""
        s = conn.owner.app
        if s is None:
            return
        self._sync_err(s)
        st = conn.state
        wr = conn.writable
        rcv = conn.rcv_nxt
        if st != s.last_state or conn.error != s.last_err:
            key = _WAKE_ALL                          # sk_state_change / sk_error_report
        else:
            key = 0
            if rcv != s.last_rcv:
                key = _IN                            # sk_data_ready
            if wr and (s.nospace or not s.last_wr):
                key |= _OUT                          # sk_write_space
        if wr and key:
            s.nospace = False
        s.last_state = st
        s.last_err = conn.error
        s.last_rcv = rcv
        s.last_wr = wr
        if key and s.epitems:
            self._wake(s, key)

    def _poll(self, s):
        """Linux tcp_poll / inet_csk_listen_poll."""
        lst = s.listener
        if lst is not None:
            return _IN if lst.accept_queue else 0
        conn = s.conn
        mask = 0
        if conn is None:
            return _OUT | EPOLLHUP                   # a fresh socket is in TCP_CLOSE
        self._sync_err(s)
        if s.pending_err:
            mask = EPOLLERR
        st = conn.state
        closed = st == states.CLOSED
        rcv_shut = closed or conn.fin_rcvd or s.shut_rd
        snd_shut = closed or s.shut_wr or conn.fin_queued
        if closed or (rcv_shut and snd_shut):
            mask |= EPOLLHUP
        if rcv_shut:
            mask |= _IN | EPOLLRDHUP
        if st not in _HANDSHAKE:
            if conn.rcvbuf:
                mask |= _IN
            if snd_shut or conn.writable:
                mask |= _OUT
        return mask

    def poll(self, fd):
        """The current readiness mask of a socket (what epoll would report)."""
        return self._poll(self._sock(fd))

    def conn_of(self, fd):
        """The TcpConnection behind a socket (tests, offload code), or None."""
        return self._sock(fd).conn


# ---------------------------------------------------------------------- options
def _flag(v):
    if isinstance(v, (bytes, bytearray)):
        v = int.from_bytes(v[:4], "little", signed=True) if v else 0
    return int(v)


def _get_nodelay(api, s):
    return int(s.config.nodelay)


def _set_nodelay(api, s, v):
    api.set_config(s, live=True, nodelay=bool(_flag(v)))


def _set_buf(field):
    def setter(api, s, v):
        v = _flag(v)
        if v < 0:
            raise _err(errno.EINVAL)
        api.set_config(s, live=True, **{field: max(v, SOCK_MIN_BUF)})
    return setter


def _get_maxseg(api, s):
    c = s.conn
    if c is not None and c.state not in _HANDSHAKE and c.state != states.CLOSED:
        return c.mss                      # the negotiated send MSS
    return s.config.mss


def _set_maxseg(api, s, v):
    v = _flag(v)
    if v < TCP_MIN_MSS or v > 65535:
        raise _err(errno.EINVAL)
    api.set_config(s, mss=v)              # takes effect for the next handshake


def _get_linger(api, s):
    return s.linger if s.linger is not None else (0, 0)


def _set_linger(api, s, v):
    if isinstance(v, (bytes, bytearray)):
        if len(v) < _LINGER.size:
            raise _err(errno.EINVAL)
        v = _LINGER.unpack_from(v)
    try:
        onoff, secs = int(v[0]), int(v[1])
    except (TypeError, ValueError, IndexError):
        raise _err(errno.EINVAL) from None
    s.linger = (1 if onoff else 0, max(secs, 0)) if onoff else None


def _set_reuseaddr(api, s, v):
    s.reuseaddr = bool(_flag(v))


def _get_error(api, s):
    api._sync_err(s)
    e = s.pending_err
    s.pending_err = 0
    return e


def _get_info(api, s):
    """A dict in the spirit of Linux struct tcp_info."""
    c = s.conn
    if c is None:
        name = "LISTEN" if s.listener is not None else "CLOSED"
        return {"state": name, "state_id": states.STATE_NAMES.index(name)}
    info = dict(c.stats)
    rto = c.rto
    info.update({
        "state": states.STATE_NAMES[c.state], "state_id": c.state,
        "rtt": rto.srtt, "rttvar": rto.rttvar, "rto": rto.rto, "backoff": rto.backoffs,
        "cwnd": c.cc.cwnd, "ssthresh": c.cc.ssthresh,
        "snd_mss": c.mss, "rcv_mss": c.rcv_mss,
        "retransmits": c.retries, "total_retrans": c.retransmits,
        "unacked": c.unacked, "snd_wnd": c.snd_wnd, "rcv_space": c.config.rcv_buf,
        "nodelay": c.config.nodelay,
    })
    return info


register_sockopt(IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY", _get_nodelay, _set_nodelay)
register_sockopt(IPPROTO_TCP, TCP_MAXSEG, "TCP_MAXSEG", _get_maxseg, _set_maxseg)
register_sockopt(IPPROTO_TCP, TCP_INFO, "TCP_INFO", _get_info)
register_sockopt(SOL_SOCKET, SO_RCVBUF, "SO_RCVBUF", lambda api, s: s.config.rcv_buf,
                 _set_buf("rcv_buf"))
register_sockopt(SOL_SOCKET, SO_SNDBUF, "SO_SNDBUF", lambda api, s: s.config.snd_buf,
                 _set_buf("snd_buf"))
register_sockopt(SOL_SOCKET, SO_LINGER, "SO_LINGER", _get_linger, _set_linger)
register_sockopt(SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR", lambda api, s: int(s.reuseaddr),
                 _set_reuseaddr)
register_sockopt(SOL_SOCKET, SO_ERROR, "SO_ERROR", _get_error)

# AccelTCP offload flags (paper §5.1, Figure 9). TCP_SETUP_OFFLOAD is read by `listen`
# (set it before; advisory: no effect without a NIC device).
register_sockopt(IPPROTO_TCP, TCP_SETUP_OFFLOAD, "TCP_SETUP_OFFLOAD",
                 lambda api, s: int(s.extra.get("setup_offload", False)),
                 lambda api, s, v: s.extra.__setitem__("setup_offload", bool(_flag(v))))
# TCP_DEFER_ACCEPT (Linux's option number; any nonzero value: on, no timeout) is read by
# `listen`: with TCP_SETUP_OFFLOAD the NIC hands a connection up with the client's first
# data, not its bare handshake ACK (Listen defer_accept).
register_sockopt(IPPROTO_TCP, TCP_DEFER_ACCEPT, "TCP_DEFER_ACCEPT",
                 lambda api, s: int(s.extra.get("defer_accept", False)),
                 lambda api, s, v: s.extra.__setitem__("defer_accept", bool(_flag(v))))
# TCP_TEARDOWN_OFFLOAD is read on close (on a listener: inherited by accepted sockets).
register_sockopt(IPPROTO_TCP, TCP_TEARDOWN_OFFLOAD, "TCP_TEARDOWN_OFFLOAD",
                 lambda api, s: int(s.extra.get("teardown_offload", False)),
                 lambda api, s, v: s.extra.__setitem__("teardown_offload", bool(_flag(v))))


def _set_chimney(api, s, v):
    """TCP_CHIMNEY_OFFLOAD on a connected socket: 1 offers the connection to the NIC,
    0 asks for it back (advisory, host.chimney: without a NIC, or not eligible now, the
    host keeps it). ENOTCONN without a connection."""
    if s.conn is None:
        raise _err(errno.ENOTCONN)
    if _flag(v):
        api.stack.chimney_offload(s.conn)
    else:
        api.stack.chimney_upload(s.conn)


register_sockopt(IPPROTO_TCP, TCP_CHIMNEY_OFFLOAD, "TCP_CHIMNEY_OFFLOAD",
                 lambda api, s: int(s.conn is not None and api.stack.chimney is not None
                                    and api.stack.chimney.owns(s.conn)),
                 _set_chimney)
