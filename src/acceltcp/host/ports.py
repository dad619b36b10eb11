"""Local ports and initial numbers: what a host picks, keyed by its secret, for a new
connection.

Theory of operation
-------------------
`PortTable` keeps the ports the socket layer reserved (``bind``), tells which local
ports and 4-tuples are in use, and chooses ephemeral ports. A 4-tuple is in use while a
TCB (`host.conns`) or a TIME-WAIT record (`host.timewait`) holds it. An active open
without a local port takes the first free one -- not reserved, not listened on, its
4-tuple not in use -- from a hash-based offset per destination (RFC 6056 §3.3.3,
Algorithm 3): successive connections to one peer walk the range in order, different
peers start at unpredictable places.

`InitialNumbers` derives, from one keyed hash (BLAKE2s) keyed once, the ISN of every
connection (RFC 6528 §3: a 4 µs clock plus a keyed hash of the 4-tuple) and the
timestamp clock offset toward each peer (RFC 7323 §7.1, Linux's secure_tcp_ts_off).
The offset is per address pair, not per 4-tuple, so successive connections to one peer
send increasing TSvals and a new SYN passes the peer's PAWS check on a 4-tuple it still
holds in TIME-WAIT (RFC 6191); per 4-tuple, reusing a port toward a server that closed
first would fail about half the time.
"""

import collections
import errno
import hashlib
import struct

from .addr import oserror

__all__ = ["PortTable", "InitialNumbers"]

_PORTS = struct.Struct("!HH")
_KEY = struct.Struct("!4s4sHH")      # remote-ip | local-ip | remote-port | local-port
_U32 = 0xFFFFFFFF
_TS_OFFSETS_MAX = 4096


class PortTable:
    """Local ports of the host with address `local_ip`: reservations, use, ephemeral
    selection over ``ephemeral = (lo, hi)``. `conns` is its `host.conns.ConnTable`,
    `timewait` its `host.timewait.TimeWaitTable`, `listeners` its port -> Listener."""

    __slots__ = ("ephemeral", "bound", "_next", "_secret", "_ip", "_conns", "_timewait",
                 "_listeners")

    def __init__(self, ephemeral, secret, local_ip, conns, timewait, listeners):
        lo, hi = ephemeral
        if not 0 < lo <= hi <= 65535:
            raise ValueError("bad ephemeral range")
        self.ephemeral = (lo, hi)
        self.bound = collections.Counter()   # port -> reservations (socket layer bind)
        self._next = 0
        self._secret = secret
        self._ip = local_ip
        self._conns = conns
        self._timewait = timewait
        self._listeners = listeners

    def bind(self, port):
        self.bound[port] += 1

    def unbind(self, port):
        if self.bound[port] <= 1:
            del self.bound[port]
        else:
            self.bound[port] -= 1

    @staticmethod
    def key(remote_ip, local_ip, remote_port, local_port):
        """The demux key of a 4-tuple (what its segments carry at frame[26:38])."""
        return _KEY.pack(remote_ip, local_ip, remote_port, local_port)

    def in_use(self, key):
        """A TCB or a TIME-WAIT record holds the 4-tuple `key` (the tables' dicts, read
        directly: once per candidate port)."""
        conns = self._conns
        return key in conns.table or key in conns.embryonic or key in self._timewait.records

    def users(self, port):
        """The TCBs and TIME-WAIT records whose local port is `port`."""
        out = self._conns.users(port)
        out.extend(tw for tw in self._timewait.values() if tw.owner.local_port == port)
        return out

    def local_port(self, remote_ip, remote_port, port):
        """The local port of an active open: `port`, or an ephemeral one if it is None
        or 0. Raises OSError EINVAL (not 1..65535), EADDRNOTAVAIL (none free)."""
        if port is None or port == 0:
            return self.pick(remote_ip, remote_port)
        if not 0 < port <= 65535:
            raise oserror(errno.EINVAL, "local port")
        return port

    def pick(self, remote_ip, remote_port):
        """RFC 6056 §3.3.3 (Algorithm 3, simple hash-based): the ephemeral port for a
        connection to (remote_ip, remote_port). Raises OSError EADDRNOTAVAIL."""
        lo, hi = self.ephemeral
        n = hi - lo + 1
        local_ip = self._ip
        h = hashlib.blake2s(local_ip + remote_ip + _PORTS.pack(remote_port, 0),
                            key=self._secret, digest_size=4).digest()
        offset = int.from_bytes(h, "big")
        bound, listeners = self.bound, self._listeners
        for _ in range(n):
            port = lo + (self._next + offset) % n
            self._next += 1
            if port in listeners or port in bound:
                continue
            if not self.in_use(_KEY.pack(remote_ip, local_ip, remote_port, port)):
                return port
        raise oserror(errno.EADDRNOTAVAIL, "no ephemeral port free")

    def any_free(self):
        """An ephemeral port that no listener, reservation or TCB uses. Raises OSError
        EADDRNOTAVAIL."""
        lo, hi = self.ephemeral
        n = hi - lo + 1
        used = self._conns.local_ports()
        for _ in range(n):
            port = lo + self._next % n
            self._next += 1
            if port not in self._listeners and port not in self.bound and port not in used:
                return port
        raise oserror(errno.EADDRNOTAVAIL, "no ephemeral port free")


class InitialNumbers:
    """ISNs and timestamp offsets of one host, keyed by its secret."""

    __slots__ = ("_hash", "_local_ip", "_ts_offsets")

    def __init__(self, secret, local_ip):
        # F() of RFC 6528 keyed once: each number copies this state instead of re-keying.
        self._hash = hashlib.blake2s(key=secret, digest_size=4)
        self._local_ip = local_ip
        self._ts_offsets = {}     # remote ip -> TS clock offset

    def isn(self, local_ip, local_port, remote_ip, remote_port, now):
        """RFC 6528 §3: ISN = M + F(localip, localport, remoteip, remoteport, secretkey),
        M a 4 µs timer, F a keyed hash (BLAKE2s here)."""
        h = self._hash.copy()
        h.update(local_ip + remote_ip + _PORTS.pack(local_port, remote_port))
        return (int.from_bytes(h.digest(), "big") + int(now * 250_000)) & _U32

    def ts_offset(self, remote_ip):
        """The timestamp clock offset toward `remote_ip` (a keyed hash of the pair)."""
        off = self._ts_offsets.get(remote_ip)
        if off is None:
            if len(self._ts_offsets) >= _TS_OFFSETS_MAX:
                self._ts_offsets.clear()
            h = self._hash.copy()
            h.update(b"ts" + self._local_ip + remote_ip)
            off = self._ts_offsets[remote_ip] = int.from_bytes(h.digest(), "big")
        return off
