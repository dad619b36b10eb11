"""Local ports and initial numbers: what a host picks, keyed by its secret, for a new
connection.

Theory of operation
-------------------
`PortTable` keeps the ports the socket layer reserved (``bind``) and chooses ephemeral
ports. An active open without a local port takes the first free one from a hash-based
offset per destination (RFC 6056 §3.3.3, Algorithm 3): successive connections to one
peer walk the range in order, different peers start at unpredictable places. What is
free (no listener, no connection or TIME-WAIT record on the 4-tuple) the stack says.

`InitialNumbers` derives, from one keyed hash (BLAKE2s) keyed once, the ISN of every
connection (RFC 6528 §3: a 4 µs clock plus a keyed hash of the 4-tuple) and the
timestamp clock offset toward each peer (RFC 7323 §7.1, Linux's secure_tcp_ts_off).
The offset is per address pair, not per 4-tuple, so successive connections to one peer
send increasing TSvals and a new SYN passes the peer's PAWS check on a 4-tuple it still
holds in TIME-WAIT (RFC 6191); per 4-tuple, reusing a port toward a server that closed
first would fail about half the time.
"""

import collections
import hashlib
import struct

__all__ = ["PortTable", "InitialNumbers"]

_PORTS = struct.Struct("!HH")
_U32 = 0xFFFFFFFF
_TS_OFFSETS_MAX = 4096


class PortTable:
    """Reserved local ports and ephemeral port selection over ``ephemeral = (lo, hi)``."""

    __slots__ = ("ephemeral", "bound", "_next", "_secret")

    def __init__(self, ephemeral, secret):
        lo, hi = ephemeral
        if not 0 < lo <= hi <= 65535:
            raise ValueError("bad ephemeral range")
        self.ephemeral = (lo, hi)
        self.bound = collections.Counter()   # port -> reservations (socket layer bind)
        self._next = 0
        self._secret = secret

    def bind(self, port):
        self.bound[port] += 1

    def unbind(self, port):
        if self.bound[port] <= 1:
            del self.bound[port]
        else:
            self.bound[port] -= 1

    def pick(self, local_ip, remote_ip, remote_port, free):
        """RFC 6056 §3.3.3 (Algorithm 3, simple hash-based): the first ephemeral port,
        not reserved, for which ``free(port)`` is true, or None (all in use)."""
        lo, hi = self.ephemeral
        n = hi - lo + 1
        h = hashlib.blake2s(local_ip + remote_ip + _PORTS.pack(remote_port, 0),
                            key=self._secret, digest_size=4).digest()
        offset = int.from_bytes(h, "big")
        bound = self.bound
        for _ in range(n):
            port = lo + (self._next + offset) % n
            self._next += 1
            if port not in bound and free(port):
                return port
        return None

    def any_free(self, used):
        """An ephemeral port not reserved and not in `used` (a set of ports), or None."""
        lo, hi = self.ephemeral
        n = hi - lo + 1
        for _ in range(n):
            port = lo + self._next % n
            self._next += 1
            if port not in self.bound and port not in used:
                return port
        return None


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
