"""Keyed, stateless SYN cookies carrying the negotiated options (AccelTCP §4.1).

Theory of operation
-------------------
The NIC answers a listener's SYN with a SYN-ACK whose ISN and TSval encode all it
will need later, and keeps no per-SYN state.  When the client's ACK comes back
(ack = ISN + 1, seq = client ISN + 1, TSecr = our TSval, RFC 7323 §4.3), ``check``
recomputes the hash and, if it matches, returns the options negotiated by the
SYN; the dataplane then hands the ACK to the host marked "new connection".

ISN (32 bits)::

    31      27 26  24 23                                         0
    +---------+------+--------------------------------------------+
    | counter | MSS  |  hash: 24 bits of keyed BLAKE2s            |
    | 5 bits  | class|                                            |
    +---------+------+--------------------------------------------+

* counter = ``floor(now / tick) mod 32`` at SYN time (the paper's "time-dependent
  5 bits"); ``check`` accepts ages 0 .. window-1 counter steps
  (``age = (counter_now - counter) mod 32``) and rebuilds the full counter as
  ``counter_now - age``.
* MSS class = index in ``MSS_TABLE`` of the largest entry <= the client's MSS.
* hash = BLAKE2s(key = K_g, digest_size = 3) over the 22-byte message
  ``local_ip(4) remote_ip(4) local_port(2) remote_port(2) client_isn(4)
  full_counter mod 2**32 (4) mss_class << 6 | tsval_low6 (2)`` (network order).
  It binds the 4-tuple, the client's ISN (as Linux does, so an ACK must also
  carry seq = client ISN + 1), the *full* counter (a cookie whose 5-bit counter
  aliases into the window 32 steps later does not verify) and the option bits
  carried in the TSval (a rewritten or garbled TSecr does not verify).

TSval (32 bits)::

    31                                6   5    4       1   0
    +----------------------------------+------+---------+------+
    | NIC timestamp clock (bits 31..6) | SACK | wscale  | MARK |
    +----------------------------------+------+---------+------+

* MARK (bit 0) = 1: "this TSval is a SYN-ACK cookie".  **The host keeps bit 0 of
  every TSval it sends clear** (``tsval & ~1``, still non-decreasing; the NIC's
  splice translation too, ``nic.splice``), so an ACK
  whose TSecr has bit 0 clear is a normal segment and skips cookie verification
  (the paper's extra bit), and one with bit 0 set on an offloaded listener that
  fails ``check`` is forged or stale.
* wscale (bits 4..1) = the client's window shift 0..14, 15 = the client sent no
  Window Scale option (then neither side scales, RFC 7323 §2.2).
* SACK (bit 5) = the client sent SACK-permitted (RFC 2018).
* bits 31..6 come from the NIC timestamp clock
  ``ts = int(now * ts_hz) + ts_offset``; the result is the largest value < ts
  with those low bits (between ts-64 and ts-1), so the cookie TSval never runs
  ahead of the clock it was taken from.  Timestamps themselves are implied: no
  timestamps in the SYN => the dataplane hands the SYN to the host, no cookie.

Worked example (``tests/tcp/test_syncookie.py::test_docstring_example`` checks it):
secret ``bytes(range(32))``, tick 1 s, window 16, period 64 s, ts_hz 1000,
ts_offset 0; SYN 10.0.0.2:40000 -> 10.0.0.1:80, client ISN 0xFFFFFFF0, MSS 1460,
wscale 7, SACK-permitted, at now = 100.25 s:

* counter = floor(100.25 / 1) = 100, 100 mod 32 = 4 -> bits 31..27 = 0b00100;
  generation 100 // 64 = 1 (key K_1); MSS 1460 -> class 6 = 0b110;
  TSval low bits = SACK 1, wscale 0111, MARK 1 = 0b101111 = 0x2F;
  hash = 0x77A0FD, so ISN = 0b00100_110 << 24 | 0x77A0FD = 0x2677A0FD.
* ts = 100250 = 0x1879A; 0x18780 | 0x2F = 0x187AF >= ts, so step back one block:
  TSval = 0x1876F (100207).
* The client's ACK (seq 0xFFFFFFF1, ack 0x2677A0FE, TSecr 0x1876F) checked at
  now <= 115.999 s returns ``CookieOptions(mss=1460, wscale=7, sack_ok=True)``; at
  116.0 s (age 16) it returns None.

Cookies without timestamps
--------------------------
A SYN without a Timestamps option leaves no TSval to carry options in.  As Linux does
(``cookie_v4_init_sequence``; ``cookie_init_timestamp`` needs TS), such a cookie is
the ISN alone and keeps only the MSS class: the connection runs without window
scaling, SACK and timestamps.  ``make(..., timestamps=False)`` -> ``(isn, None)``;
``check_no_ts`` verifies the ACK from seq and ack.  The hashed option field is then
``mss_class << 6 | 0`` (MARK clear), while a TS cookie's always has the MARK set: a
cookie of one kind never verifies as the other.  The NIC makes no such cookies (it
hands TS-less SYNs to the host); the host stack does (``host.stack``).  In the worked
example above, the same SYN without timestamps gets ISN 0x26DB77B1 (class 6, counter
4 as before) and no TSval; ``check_no_ts`` of seq 0xFFFFFFF1, ack 0x26DB77B2 returns
``CookieOptions(mss=1460, wscale=None, sack_ok=False)`` up to 115.999 s.

Host cookies and the NIC
------------------------
The host stack makes its own cookies with its own jar and secret (Linux's
tcp_syncookies=1: only when a listener's SYN queue is full).  Can a NIC listener
mis-check the ACK of a host cookie?  The NIC checks exactly the ACKs to an ip:port it
has a listener entry for whose TSecr has the MARK bit.  A host cookie's ACK has a
marked TSecr only if the SYN had timestamps and the host's listener offers them --
and the NIC passes such a SYN up only when it has no entry for the listener (not
offloaded, its Listen refused on a full table, the NIC gone) or it cannot make a
cookie (client MSS < 536: ``make`` returns None, the host makes none either).  Then
the ACK passes the NIC the way the SYN did and the host checks it with its own jar.
Host cookies without timestamps give ACKs without TSecr, which the NIC never checks.
The remaining gap -- an entry installed between the host's cookie SYN-ACK and the
client's ACK -- does not arise: the host sends Listen when the listener opens, with
an empty SYN queue, hence no cookies.  The converse: a NIC cookie's ACK that reaches
the host as a plain segment (after Unlisten, or once the NIC is lost) fails the host's
check (other secret) and is answered with an RST, as ``HostStack.nic_lost`` says.

Keys and rotation
-----------------
The key of generation ``g = full_counter // (period / tick)`` is
``K_g = BLAKE2s(g as 8 bytes, key=secret, person=b"acctcpck")``: deterministic
given the secret, a new key every ``period`` (64 counter steps by default).
``check`` takes the generation from the rebuilt counter, so a cookie made under
the previous key is still accepted while it is inside the window (window <=
period / tick is enforced, so it is never older than one generation) and
exactly one hash is computed per check.  The jar caches the current and previous
keyed BLAKE2s states; ``rotate(now)`` moves the cache (``make``/``check`` do it
by themselves), and a ``now`` that goes backwards still computes the right
(uncached) key.  A cookie is a pure function of (secret, arguments).

Validity window: default tick 1 s, window 16 -> an ACK is accepted 15 to 16 s
after the SYN-ACK: the handshake RTT plus, when the bare ACK was lost, the
client's first data segment (also ack = ISN+1, TSecr = cookie) and its RTO
retransmissions at +1, +3, +7, +15 s (RFC 6298 initial RTO 1 s, doubling).

Hash choice (measured, CPython 3.11): a keyed BLAKE2s state, ``copy()`` +
``update(22 bytes)`` + ``digest()`` costs ~0.4 µs (re-keying per call: ~0.66 µs).
SipHash is only reachable as ``hash(bytes)``, keyed by the process-wide
PYTHONHASHSEED, not by our secret: rejected.  Forgery: a blind attacker needs the
24-bit hash right: 2**-24 per try.
"""

import hashlib
import struct
from bisect import bisect_right
from typing import NamedTuple

__all__ = [
    "MSS_TABLE", "WSCALE_NONE", "TS_COOKIE_MARK", "TS_SACK", "TS_OPTION_MASK",
    "ISN_HASH_MASK", "CookieOptions", "SynCookieJar", "mss_class",
]

#: The 8 MSS classes (3 bits).  536 is the RFC 9293 default (no MSS option);
#: 1200 IPv6-ish/tunnel minimum; 1360/1400 VPNs and tunnels; 1440 and 1452
#: (PPPoE, MTU 1492) ; 1460 Ethernet; 8960 jumbo frames (MTU 9000).
MSS_TABLE = (536, 1200, 1360, 1400, 1440, 1452, 1460, 8960)
WSCALE_NONE = 15               # wscale code: the client sent no Window Scale option
TS_COOKIE_MARK = 0x01          # TSval bit 0: a SYN-ACK cookie (host TSvals keep it 0)
TS_SACK = 0x20                 # TSval bit 5: SACK permitted
TS_OPTION_MASK = 0x3F          # TSval bits 5..0 carry the options
ISN_HASH_MASK = 0xFFFFFF

_MASK = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
# local_ip, remote_ip, local_port, remote_port, client_isn, counter, mss_class << 6 | low6
_MSG = struct.Struct("!4s4sHHIIH")
_GEN = struct.Struct("!Q")
_from_bytes = int.from_bytes


class CookieOptions(NamedTuple):
    """What a valid cookie tells the host: the client's MSS (its class value), the
    client's window shift (None: no window scaling either way) and SACK-permitted.
    Timestamps are on by construction.  Immutable; ``check`` returns shared instances."""
    mss: int
    wscale: "int | None"
    sack_ok: bool


# index: mss_class << 5 | sack << 4 | wscale code  (== class << 5 | tsval_low6 >> 1)
_OPTIONS = tuple(
    CookieOptions(MSS_TABLE[i >> 5], None if i & 15 == WSCALE_NONE else i & 15, bool(i & 16))
    for i in range(256))
# a cookie without timestamps: the MSS class only
_NO_TS_OPTIONS = tuple(CookieOptions(m, None, False) for m in MSS_TABLE)


def mss_class(mss):
    """Index in MSS_TABLE of the largest class <= mss; -1 when mss < 536."""
    return bisect_right(MSS_TABLE, mss) - 1


class SynCookieJar:
    """SYN cookies of one listener set (one secret).  No per-SYN state: two cached
    keyed hash states (current and previous key generation).

    secret: 16..32 bytes (the BLAKE2s key size).  tick: seconds per counter step.
    window: accepted ages, 1..32 steps (and <= period / tick).  period: seconds
    between key generations, a whole number of ticks.  ts_hz / ts_offset: the
    NIC timestamp clock of the cookie TSval, ``int(now * ts_hz) + ts_offset``
    (ts_offset None: derived from the secret, so TSvals do not reveal `now`).
    """

    __slots__ = ("tick", "window", "period", "steps", "ts_hz", "ts_offset",
                 "_secret", "_gen", "_cur", "_prev")

    def __init__(self, secret, *, tick=1.0, window=16, period=64.0, ts_hz=1000,
                 ts_offset=None):
        secret = bytes(secret)
        if not 16 <= len(secret) <= 32:
            raise ValueError("secret must be 16..32 bytes (got %d)" % len(secret))
        tick = float(tick)
        if not (tick > 0.0 and tick != float("inf")):
            raise ValueError("tick must be a finite number > 0 (got %r)" % tick)
        if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= 32:
            raise ValueError("window must be an int in 1..32 (got %r)" % (window,))
        period = float(period)
        steps = round(period / tick) if period > 0.0 and period != float("inf") else 0
        if steps < 1 or abs(steps * tick - period) > 1e-9 * period:
            raise ValueError("period must be a positive whole number of ticks (got %r)" % period)
        if window > steps:
            raise ValueError("window (%d steps) must not exceed the key period (%d steps)"
                             % (window, steps))
        if isinstance(ts_hz, bool) or not isinstance(ts_hz, int) or ts_hz < 1:
            raise ValueError("ts_hz must be an int >= 1 (got %r)" % (ts_hz,))
        self.tick = tick
        self.window = window
        self.period = period
        self.steps = steps
        self.ts_hz = ts_hz
        self._secret = secret
        if ts_offset is None:
            ts_offset = _from_bytes(hashlib.blake2s(
                b"ts_offset", key=secret, digest_size=4, person=b"acctcpts").digest(), "big")
        self.ts_offset = ts_offset & _MASK
        self._gen = 0
        self._cur = self._derive(0)
        self._prev = self._derive(-1)

    # -- keys ------------------------------------------------------------------

    def _derive(self, gen):
        key = hashlib.blake2s(_GEN.pack(gen & _U64), key=self._secret, digest_size=32,
                              person=b"acctcpck").digest()
        return hashlib.blake2s(key=key, digest_size=3, person=b"acctcpsc")

    def _key(self, gen):
        """The keyed hash state of generation `gen` (moves the cache forward)."""
        cur = self._gen
        if gen == cur:
            return self._cur
        if gen == cur - 1:
            return self._prev
        if gen > cur:
            self._prev = self._cur if gen == cur + 1 else self._derive(gen - 1)
            self._cur = self._derive(gen)
            self._gen = gen
            return self._cur
        return self._derive(gen)                 # time went backwards: right, uncached

    @property
    def generation(self):
        """The key generation the cache holds as current."""
        return self._gen

    def rotate(self, now):
        """Bring the key cache up to `now` (make/check also do it); returns the generation."""
        self._key(int(now // self.tick) // self.steps)
        return self._gen

    def counter(self, now):
        """The full time counter at `now` (its low 5 bits go into the ISN)."""
        return int(now // self.tick)

    # -- cookies ---------------------------------------------------------------

    def make(self, local_ip, local_port, remote_ip, remote_port, client_isn, mss, wscale,
             sack_ok, now, timestamps=True):
        """The SYN-ACK's (isn, tsval) for a SYN from remote to local; None when the
        client's MSS is below the smallest class (hand that SYN to the host).

        client_isn: the SYN's seq.  mss: the client's MSS option (None: 536).
        wscale: the client's Window Scale shift 0..14 or None.  sack_ok: the SYN
        carried SACK-permitted.  timestamps False: a cookie without timestamps,
        ``(isn, None)``, keeping the MSS class only (wscale and sack_ok ignored)."""
        if mss is None:
            mss = 536
        elif mss < 536:
            if mss < 0:
                raise ValueError("bad MSS %r" % (mss,))
            return None
        cls = bisect_right(MSS_TABLE, mss) - 1
        if not timestamps:
            opt = 0                               # no TSval: MSS class only, MARK clear
        elif wscale is None:
            opt = 0x1F                            # WSCALE_NONE << 1 | MARK
        elif 0 <= wscale <= 14:
            opt = wscale << 1 | 1
        else:
            raise ValueError("wscale must be 0..14 or None (got %r)" % (wscale,))
        if sack_ok and opt:
            opt |= 0x20
        if len(local_ip) != 4 or len(remote_ip) != 4:
            raise ValueError("IPv4 addresses are 4 bytes")
        count = int(now // self.tick)
        gen = count // self.steps
        key = self._cur if gen == self._gen else self._key(gen)
        h = key.copy()
        try:
            h.update(_MSG.pack(local_ip, remote_ip, local_port, remote_port, client_isn,
                               count & _MASK, cls << 6 | opt))
        except struct.error as e:
            raise ValueError("bad port or ISN: %s" % e) from None
        isn = (count & 31) << 27 | cls << 24 | _from_bytes(h.digest(), "big")
        if not opt:
            return isn, None
        ts = (int(now * self.ts_hz) + self.ts_offset) & _MASK
        tsval = (ts & 0xFFFFFFC0) | opt
        if opt >= ts & 0x3F:
            tsval = (tsval - 64) & _MASK          # never ahead of the clock: ts-64 .. ts-1
        return isn, tsval

    def check(self, local_ip, local_port, remote_ip, remote_port, seq, ack, tsecr, now):
        """The options of a valid cookie ACK, else None (forged, stale, garbled, or
        not a cookie: no TSecr or its MARK bit clear).

        seq, ack, tsecr: straight from the client's segment (seq = client ISN + 1,
        ack = our ISN + 1; the +1s are undone here, mod 2**32)."""
        if tsecr is None or not tsecr & 1:
            return None
        cls = self._verify(local_ip, local_port, remote_ip, remote_port, seq, ack,
                           tsecr & 0x3F, now)
        return None if cls is None else _OPTIONS[cls << 5 | (tsecr & 0x3F) >> 1]

    def check_no_ts(self, local_ip, local_port, remote_ip, remote_port, seq, ack, now):
        """The options of a valid cookie made with ``timestamps=False`` -- the MSS
        class; wscale None, no SACK -- else None.  For ACKs without timestamps."""
        cls = self._verify(local_ip, local_port, remote_ip, remote_port, seq, ack, 0, now)
        return None if cls is None else _NO_TS_OPTIONS[cls]

    def _verify(self, local_ip, local_port, remote_ip, remote_port, seq, ack, opt, now):
        """The MSS class of a cookie ISN (ack - 1) that verifies with option bits
        `opt`, else None."""
        if len(local_ip) != 4 or len(remote_ip) != 4:
            raise ValueError("IPv4 addresses are 4 bytes")
        isn = (ack - 1) & _MASK
        count = int(now // self.tick)
        age = (count - (isn >> 27)) & 31
        if age >= self.window:
            return None
        count -= age
        gen = count // self.steps
        if gen == self._gen:
            key = self._cur
        elif gen == self._gen - 1:
            key = self._prev
        else:
            key = self._key(gen)
        cls = isn >> 24 & 7
        h = key.copy()
        try:
            h.update(_MSG.pack(local_ip, remote_ip, local_port, remote_port, (seq - 1) & _MASK,
                               count & _MASK, cls << 6 | opt))
        except struct.error as e:
            raise ValueError("bad port: %s" % e) from None
        if _from_bytes(h.digest(), "big") != isn & 0xFFFFFF:
            return None
        return cls

    def __repr__(self):
        return "SynCookieJar(tick=%r, window=%d, period=%r, generation=%d)" % (
            self.tick, self.window, self.period, self._gen)
