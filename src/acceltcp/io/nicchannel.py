"""The host port ("PCIe") between a host stack and a NIC that runs in another process.

Theory of operation
-------------------
In the *process* placement (docs/placements.md) the NIC dataplane runs in its own OS
process, which owns the TAP; the host stack's process reaches it over one
``AF_UNIX`` ``SOCK_STREAM`` socketpair, the NIC's host port. The stream carries
*records*, each a 12-byte header and a body, all integers in network byte order:

    offset size field     meaning
    0      1    version   VERSION (1)
    1      1    kind      FRAME 1, SEGMENT 2, HELLO 3, STATS_REQUEST 4, STATS 5,
                          PING 6, PONG 7
    2      1    flags     bit0 CSUM_OK (FRAME only): the TAP's kernel vouched for the TCP
                          checksum of the wire frame this frame came from
    3      1    reserved  0
    4      4    length    body bytes (limits per kind below; at most MAX_BODY)
    8      2    gso_size  SEGMENT: the MSS the payload is cut to (>= 1); else 0
    10     2    hdr_len   SEGMENT: Ethernet+IPv4+TCP header bytes at the start of the
                          body (54..134, <= length); else 0

* FRAME (both ways): one Ethernet frame, a plain or a control (0x090A-0x090E) one.
  Host -> NIC: it enters the dataplane on port HOST. NIC -> host: it left the
  dataplane on port HOST; ``CSUM_OK`` carries the wire frame's checksum verdict.
* SEGMENT (host -> NIC): a TCP/IPv4 segment whose TCP checksum field holds only the
  pseudo-header sum, possibly a TSO super-segment: the NIC process writes it to the TAP
  with a virtio-net header (``TapDevice.send_segment(body[:hdr_len], body[hdr_len:],
  gso_size)``); the kernel completes the checksum and cuts it to ``gso_size``.
* HELLO (NIC -> host, the first record): UTF-8 JSON describing the NIC process (pid,
  the dataplane's effective settings).
* STATS_REQUEST (host -> NIC): body = u32 request id; answered by a STATS record.
* STATS (NIC -> host): UTF-8 JSON with the dataplane's counters (and the request id,
  0 for the periodic unsolicited ones).
* PING (host -> NIC): body = u32 sequence number; the NIC answers at once with a PONG
  carrying the same number. The host's watchdog (``Heartbeat``) probes a NIC it has
  not heard from for a while; a NIC that answers nothing -- no record of any kind --
  within the watchdog's deadline is taken to be hung.

Batching. Senders queue records (header and body as separate buffers: nothing is
concatenated) and ``flush()`` hands the whole queue to the kernel with one
``sendmsg`` (scatter-gather, up to IOV_MAX buffers per call), so a wake-up that moved N
frames costs one syscall, not N. Receivers ``recv_into`` a large buffer, so one call
usually returns every record of the peer's batch; ``RecordDecoder`` cuts the stream
into records and keeps an incomplete tail for the next read.

Errors. A stream that does not decode (wrong version, unknown or wrong-direction kind,
flags or reserved bits set, a length outside the kind's limits, an inconsistent
SEGMENT) cannot be resynchronised: ``RecordDecoder`` raises ``ChannelError`` (with a
``reason`` from ``CHANNEL_ERRORS``) and stays broken; records that decoded before the
bad header are still returned first. ``NicChannel.receive`` never raises: it returns
the good records and notes EOF (``eof``) or the error (``error``: the ChannelError, or
a ``ChannelClosed`` for a socket error); ``flush`` raises ``ChannelClosed`` when the
other end is gone. Both sides treat any of these as the end of the other: the host
falls back to driving the TAP itself, the NIC process exits. Nothing in here raises
anything else on bad input.

A peer that stops answering without closing (a hung NIC process: ``kill -STOP``, a
deadlock) is invisible to the socket; ``Heartbeat`` is the sans-I/O deadline that
notices it (``nic.placements.ProcessNicDevice`` drives it from a loop timer). When the owner
gives the channel up it can still take what it queued but never handed to the kernel
(``take_unsent``: whole records only, a half-written one is dropped), so that those
frames are sent another way, exactly once.

``RecordDecoder`` and the encoders are sans-I/O (tests feed them bytes in arbitrary
pieces); ``NicChannel`` is the thin non-blocking socket wrapper both processes use.
"""

import collections
import os
import socket
import struct

__all__ = [
    "VERSION", "HEADER", "MAX_BODY", "FRAME", "SEGMENT", "HELLO", "STATS_REQUEST", "STATS",
    "PING", "PONG", "KINDS", "HOST_TO_NIC", "NIC_TO_HOST", "CSUM_OK", "CHANNEL_ERRORS",
    "ChannelError", "ChannelClosed", "RecordDecoder", "NicChannel", "ChannelStats",
    "encode", "frame_header", "segment_header", "Heartbeat",
]

VERSION = 1
_HDR = struct.Struct("!BBBBIHH")
HEADER = _HDR.size                   # 12
#: Largest body: a 64 KiB TSO/GRO frame with its Ethernet header, a 0x090B control header
#: and room to spare, or a STATS JSON document.
MAX_BODY = 1 << 17

FRAME = 1
SEGMENT = 2
HELLO = 3
STATS_REQUEST = 4
STATS = 5
PING = 6
PONG = 7
KINDS = frozenset((FRAME, SEGMENT, HELLO, STATS_REQUEST, STATS, PING, PONG))
HOST_TO_NIC = frozenset((FRAME, SEGMENT, STATS_REQUEST, PING))
NIC_TO_HOST = frozenset((FRAME, HELLO, STATS, PONG))

CSUM_OK = 0x01

_SEG_HDR_MIN = 14 + 20 + 20          # Ethernet + IPv4 + TCP without options
_SEG_HDR_MAX = 14 + 60 + 60

#: kind -> (min length, max length, allowed flag bits)
_LIMITS = {
    FRAME: (1, MAX_BODY, CSUM_OK),
    SEGMENT: (_SEG_HDR_MIN, MAX_BODY, 0),
    HELLO: (2, MAX_BODY, 0),
    STATS_REQUEST: (4, 4, 0),
    STATS: (2, MAX_BODY, 0),
    PING: (4, 4, 0),
    PONG: (4, 4, 0),
}

#: Every ChannelError.reason.
CHANNEL_ERRORS = (
    "bad_version",       # version byte != VERSION
    "bad_kind",          # unknown kind, or a kind that does not travel in this direction
    "bad_flags",         # flag bits the kind does not define, or reserved byte != 0
    "bad_length",        # body length outside the kind's limits (oversize included)
    "bad_segment",       # SEGMENT hdr_len/gso_size missing or inconsistent; or those
                         # fields set on another kind
)

IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
IOV_MAX = max(2, min(IOV_MAX, 1024)) & ~1     # whole (header, body) pairs if possible
#: Bytes a channel may hold unsent before new records are refused (a full NIC ring).
MAX_PENDING = 16 << 20
#: Decoder buffer: several full-size records, so one recv usually takes a whole batch.
DEFAULT_CAPACITY = 4 << 20


class ChannelError(ValueError):
    """The byte stream is not a valid record stream; ``reason`` in CHANNEL_ERRORS."""

    def __init__(self, reason, detail=""):
        super().__init__("%s%s" % (reason, ": " + detail if detail else ""))
        self.reason = reason


class ChannelClosed(ConnectionError):
    """EOF or a socket error on the channel: the other side is gone."""


# ---------------------------------------------------------------------- encoding
def frame_header(length, csum_ok=False):
    """Header of a FRAME record with a ``length``-byte body."""
    return _HDR.pack(VERSION, FRAME, CSUM_OK if csum_ok else 0, 0, length, 0, 0)


def segment_header(hdr_len, payload_len, gso_size):
    """Header of a SEGMENT record: ``hdr_len`` header bytes, then the payload."""
    return _HDR.pack(VERSION, SEGMENT, 0, 0, hdr_len + payload_len, gso_size, hdr_len)


def encode(kind, body, flags=0, gso_size=0, hdr_len=0):
    """One whole record (header + body), validated as the decoder would."""
    body = bytes(body)
    err = _check(kind, flags, 0, len(body), gso_size, hdr_len, KINDS)
    if err is not None:
        raise ChannelError(*err)
    return _HDR.pack(VERSION, kind, flags, 0, len(body), gso_size, hdr_len) + body


def _check(kind, flags, reserved, length, gso_size, hdr_len, accept):
    """None if the header is acceptable, else (reason, detail)."""
    lim = _LIMITS.get(kind)
    if lim is None or kind not in accept:
        return ("bad_kind", "kind %d" % kind)
    lo, hi, allowed = lim
    if flags & ~allowed or reserved:
        return ("bad_flags", "flags %#x reserved %#x on kind %d" % (flags, reserved, kind))
    if not lo <= length <= hi:
        return ("bad_length", "%d bytes for kind %d (%d..%d)" % (length, kind, lo, hi))
    if kind == SEGMENT:
        if not (_SEG_HDR_MIN <= hdr_len <= _SEG_HDR_MAX and hdr_len <= length
                and gso_size > 0):
            return ("bad_segment", "hdr_len %d gso_size %d length %d"
                    % (hdr_len, gso_size, length))
    elif gso_size or hdr_len:
        return ("bad_segment", "gso_size/hdr_len set on kind %d" % kind)
    return None


# ---------------------------------------------------------------------- decoding
class RecordDecoder:
    """Cut a byte stream into records. ``accept``: the kinds this side may receive.

    Zero-copy receive: ``space()`` is the writable tail of the internal buffer (for
    ``recv_into``), ``commit(n)`` makes n bytes of it valid, ``drain()`` returns the
    complete records as ``(kind, flags, gso_size, hdr_len, body: bytes)`` tuples.
    ``feed(data)`` does all three for bytes from elsewhere (tests)."""

    __slots__ = ("accept", "_buf", "_mv", "_start", "_end", "broken")

    def __init__(self, accept=KINDS, capacity=DEFAULT_CAPACITY):
        if capacity < HEADER + MAX_BODY:
            raise ValueError("capacity must hold one maximal record (%d bytes)"
                             % (HEADER + MAX_BODY))
        self.accept = frozenset(accept)
        self._buf = bytearray(capacity)
        self._mv = memoryview(self._buf)
        self._start = self._end = 0
        #: the reason of the ChannelError once the stream went bad (sticky)
        self.broken = None

    @property
    def pending(self):
        """Bytes buffered that do not make a complete record yet."""
        return self._end - self._start

    def space(self):
        if self._start == self._end:
            self._start = self._end = 0
        elif self._start and len(self._buf) - self._end < HEADER + MAX_BODY:
            n = self._end - self._start
            self._buf[:n] = self._mv[self._start:self._end]
            self._start, self._end = 0, n
        return self._mv[self._end:]

    def commit(self, n):
        if not 0 <= n <= len(self._buf) - self._end:
            raise ValueError("commit beyond the buffer")
        self._end += n

    def feed(self, data):
        """Append ``data`` (any length) and return the records completed by it."""
        data = memoryview(data).cast("B")
        out = []
        while data:
            sp = self.space()
            k = min(len(sp), len(data))
            sp[:k] = data[:k]
            self.commit(k)
            data = data[k:]
            out += self.drain()
        return out

    def drain(self):
        """Complete records buffered so far; ChannelError when the stream is garbled
        (after returning the good records that came before it, on the next call)."""
        if self.broken is not None:
            raise ChannelError(self.broken, "stream already broken")
        buf = self._buf
        mv = self._mv
        pos = self._start
        end = self._end
        unpack = _HDR.unpack_from
        out = []
        accept = self.accept
        while end - pos >= HEADER:
            ver, kind, flags, res, length, gso, hlen = unpack(buf, pos)
            if ver != VERSION:
                err = ("bad_version", "version %d" % ver)
            else:
                err = _check(kind, flags, res, length, gso, hlen, accept)
            if err is not None:
                self.broken = err[0]
                self._start = pos
                if out:
                    return out
                raise ChannelError(*err)
            b = pos + HEADER
            if end - b < length:
                break
            out.append((kind, flags, gso, hlen, bytes(mv[b:b + length])))
            pos = b + length
        if pos == end:
            self._start = self._end = 0
        else:
            self._start = pos
        return out


# ---------------------------------------------------------------------- socket wrapper
class ChannelStats:
    """Channel counters (plain attributes; ``as_dict()`` for JSON). A *send* is one
    sendmsg call, a *recv* one recv_into call; ``max_send_records`` /
    ``max_recv_records`` are the largest batches moved by one flush / one receive."""

    __slots__ = ("records_out", "bytes_out", "sends", "flushes", "max_send_records",
                 "send_partial", "tx_dropped", "records_in", "bytes_in", "recvs",
                 "max_recv_records")

    def __init__(self):
        for k in self.__slots__:
            setattr(self, k, 0)

    def as_dict(self):
        return {k: getattr(self, k) for k in self.__slots__}


class NicChannel:
    """One end of the host port: a non-blocking stream socket moving record batches.

    ``queue_*`` only queue (False, counted ``tx_dropped``, when more than
    ``max_pending`` bytes wait: a full ring drops, it does not block); ``flush()``
    writes what it can with as few sendmsg calls as possible and returns True when
    nothing is left (else the owner waits for writability and flushes again).
    ``receive(max_records)`` reads until EAGAIN (or enough records) and returns the
    records; EOF sets ``eof``, a garbled stream or a socket error sets ``error`` (records
    read before either are still returned). ``flush`` raises ChannelClosed when the
    other end is gone."""

    def __init__(self, sock, *, accept, max_pending=MAX_PENDING, capacity=DEFAULT_CAPACITY,
                 sndbuf=4 << 20):
        self.sock = sock
        sock.setblocking(False)
        for opt, force in ((socket.SO_SNDBUF, 32), (socket.SO_RCVBUF, 33)):
            try:                          # SO_SNDBUFFORCE / SO_RCVBUFFORCE (root)
                sock.setsockopt(socket.SOL_SOCKET, force, sndbuf)
            except OSError:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, sndbuf)
                except OSError:
                    pass
        self.decoder = RecordDecoder(accept, capacity)
        self.max_pending = max_pending
        self.stats = ChannelStats()
        self.eof = False
        self.error = None
        self.closed = False
        self._out = []
        self._pending = 0
        self._queued_records = 0
        # (bytes, buffers) of every record in _out, oldest first, and how many bytes of
        # the oldest one the kernel already took: record boundaries for take_unsent
        self._sizes = collections.deque()
        self._head_sent = 0

    def fileno(self):
        return self.sock.fileno()

    @property
    def pending_bytes(self):
        return self._pending

    # -- send side
    def _room(self, n):
        if self._pending + n > self.max_pending:
            self.stats.tx_dropped += 1
            return False
        self._pending += n
        self._queued_records += 1
        return True

    def queue_frame(self, frame, csum_ok=False):
        n = len(frame)
        if not self._room(HEADER + n):
            return False
        self._out += (frame_header(n, csum_ok), frame)
        self._sizes.append((HEADER + n, 2))
        return True

    def queue_segment(self, header, payload, gso_size):
        h = len(header)
        p = len(payload)
        if not self._room(HEADER + h + p):
            return False
        self._out += (segment_header(h, p, gso_size), header, payload)
        self._sizes.append((HEADER + h + p, 3))
        return True

    def queue_record(self, kind, body):
        """A HELLO/STATS/STATS_REQUEST record (bytes body), validated."""
        rec = encode(kind, body)
        if not self._room(len(rec)):
            return False
        self._out.append(rec)
        self._sizes.append((len(rec), 1))
        return True

    def flush(self):
        out = self._out
        if not out:
            return True
        st = self.stats
        st.flushes += 1
        if self._queued_records:
            st.records_out += self._queued_records
            if self._queued_records > st.max_send_records:
                st.max_send_records = self._queued_records
            self._queued_records = 0
        sendmsg = self.sock.sendmsg
        while out:
            iov = out[:IOV_MAX] if len(out) > IOV_MAX else out
            n_iov = len(iov)
            try:
                n = sendmsg(iov, (), socket.MSG_NOSIGNAL)
            except BlockingIOError:
                return False
            except InterruptedError:
                continue
            except OSError as e:
                raise ChannelClosed(e.errno, "channel send: %s" % e.strerror) from e
            st.sends += 1
            st.bytes_out += n
            self._pending -= n
            sizes = self._sizes
            done = self._head_sent + n
            while sizes and done >= sizes[0][0]:
                done -= sizes.popleft()[0]
            self._head_sent = done
            i = 0
            while n:
                b = out[i]
                k = len(b)
                if n >= k:
                    n -= k
                    i += 1
                else:
                    out[i] = memoryview(b)[n:]
                    n = 0
                    st.send_partial += 1
            del out[:i]
            if i < n_iov:
                return False                  # the kernel took only part: it is full
        return True

    @property
    def unsent_records(self):
        """Records queued and not yet (entirely) handed to the kernel."""
        return len(self._sizes)

    def take_unsent(self):
        """Give up sending: -> ``(records, torn)``. ``records``: every queued record no
        byte of which reached the kernel, oldest first, as ``(kind, flags, gso_size,
        hdr_len, body)`` (what ``receive`` returns on the other side); ``torn``: 1 if the
        oldest record was half written (its rest is dropped: the peer has its first
        bytes), else 0. The queue is empty afterwards."""
        out = self._out
        sizes = self._sizes
        i = 0
        torn = 0
        if self._head_sent and sizes:
            left = sizes.popleft()[0] - self._head_sent
            while left > 0:
                left -= len(out[i])
                i += 1
            torn = 1
        recs = []
        unpack = _HDR.unpack_from
        for _, nbufs in sizes:
            raw = b"".join(out[i:i + nbufs])
            i += nbufs
            _, kind, flags, _, _, gso, hlen = unpack(raw, 0)
            recs.append((kind, flags, gso, hlen, raw[HEADER:]))
        self._out = []
        sizes.clear()
        self._head_sent = self._pending = self._queued_records = 0
        return recs, torn

    # -- receive side
    def receive(self, max_records=1 << 30):
        """Records available now (reads until EAGAIN, EOF, an error, or max_records).
        Never raises: EOF sets ``eof``; a garbled stream (ChannelError) or a socket error
        (ChannelClosed) is kept in ``error``. Records decoded before either are returned."""
        dec = self.decoder
        st = self.stats
        recv_into = self.sock.recv_into
        recs = []
        while len(recs) < max_records and not self.eof and self.error is None:
            try:
                n = recv_into(dec.space())
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as e:
                self.error = ChannelClosed(e.errno, "channel receive: %s" % e.strerror)
                break
            st.recvs += 1
            if n == 0:
                self.eof = True
                break
            st.bytes_in += n
            dec.commit(n)
            try:
                recs += dec.drain()
                if dec.broken is not None:      # good records came first; now the error
                    dec.drain()
            except ChannelError as e:
                self.error = e
        if recs:
            st.records_in += len(recs)
            if len(recs) > st.max_recv_records:
                st.max_recv_records = len(recs)
        return recs

    def close(self):
        if not self.closed:
            self.closed = True
            self._out = []
            self._pending = 0
            self._sizes.clear()
            self._head_sent = 0
            try:
                self.sock.close()
            except OSError:
                pass



# ---------------------------------------------------------------------- watchdog
class Heartbeat:
    """The deadline of a peer that must show signs of life: sans-I/O, times are passed in.

    ``Heartbeat(deadline, interval=None)``; the owner calls ``heard(now)`` whenever any
    record arrives from the peer, and ``tick(now)`` at ``next_tick()`` (or later). While
    the peer is heard from at least every ``interval`` seconds nothing is sent: traffic
    is the heartbeat. After ``interval`` seconds of silence ``tick`` returns ``PROBE`` (the
    owner sends a PING now: ``probe_seq`` is its number, the probe counts as sent at
    ``now``); a probe that nothing at all has followed for ``deadline`` seconds makes
    ``tick`` return ``EXPIRED`` (and keep returning it). Only what the peer *sent after*
    a probe could count as its answer, but records the owner had not yet read when it
    probed (it reads before every tick) can make one probe look answered; the next one
    then settles it, so a hung peer is declared at most ``interval + deadline`` (plus one
    read's delay) after it stopped. An owner that itself stalls never declares a
    responsive peer hung: it reads what arrived before it ticks."""

    __slots__ = ("deadline", "interval", "heard_at", "probe_at", "probe_seq", "probes",
                 "expired")

    PROBE = "probe"
    EXPIRED = "expired"

    def __init__(self, deadline, interval=None, now=0.0):
        if not deadline > 0:
            raise ValueError("deadline must be > 0")
        self.deadline = float(deadline)
        self.interval = float(interval) if interval is not None else min(deadline / 4, 0.25)
        self.heard_at = now          # the start counts as a sign of life
        self.probe_at = None         # when the unanswered probe went out
        self.probe_seq = 0
        self.probes = 0
        self.expired = False

    def heard(self, now):
        self.heard_at = now
        self.probe_at = None

    def tick(self, now):
        """-> None, PROBE or EXPIRED (see the class doc)."""
        if self.expired:
            return self.EXPIRED
        if self.probe_at is not None:
            if now - self.probe_at >= self.deadline:
                self.expired = True
                return self.EXPIRED
            return None
        if now - self.heard_at >= self.interval:
            self.probe_at = now
            self.probe_seq = (self.probe_seq % 0xFFFFFFFF) + 1
            self.probes += 1
            return self.PROBE
        return None

    def next_tick(self):
        """When ``tick`` has something to do next (None once expired)."""
        if self.expired:
            return None
        if self.probe_at is not None:
            return self.probe_at + self.deadline
        return self.heard_at + self.interval
