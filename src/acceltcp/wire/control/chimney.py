"""TCP Chimney partial offload (0x090F): the codecs of its messages.

The host hands an established connection's whole TCB to the NIC (ChimneyOffload: the
state value, ``tcp.tcbstate.TcbState``, in the plain-value encoding of
``wire.control.value``, cut into chunks); the NIC answers ChimneyAccepted or ChimneyRefused (the host keeps it). While
offloaded the host gives the NIC bytes to send (ChimneySend, numbered by their offset
in the stream since the offload) and the NIC gives the host the in-order bytes it
received (ChimneyData; also the count of the host's bytes the peer acknowledged, so
the host knows how much the NIC still holds). The state comes back in ChimneyUpload
(chunks again, with a reason), unsolicited or after a ChimneyUploadRequest.

Each message is a fixed header (a u32 `length` its last field) and `body` (bytes) right
behind it; `decode_chimney` decodes a whole frame, body included.
"""

import struct

from ..errors import WireError
from .base import (ETHERTYPE_CHIMNEY, _bad, _bytes, _enum, _ethertype, _flags, _FlowKey,
                   _FlowReason, _Msg, _read_header, _zero)

__all__ = ["ETHERTYPE_CHIMNEY", "CHIMNEY_MESSAGES", "CHIMNEY_MAX_BODY",
           "CHIMNEY_REFUSED_TABLE_FULL", "CHIMNEY_REFUSED_BAD_STATE", "CHIMNEY_REFUSED_DUPLICATE",
           "UPLOAD_HOST_REQUEST", "UPLOAD_APP_CLOSE", "UPLOAD_PEER_FIN", "UPLOAD_PEER_RST",
           "UPLOAD_REORDER", "UPLOAD_TIMEOUT", "UPLOAD_ERROR", "UPLOAD_REASONS",
           "CHIMNEY_DATA_FIN", "CHIMNEY_SEND_FIN", "ChimneyOffload", "ChimneyAccepted",
           "ChimneyRefused", "ChimneyData", "ChimneySend", "ChimneyUploadRequest",
           "ChimneyUpload", "decode_chimney", "state_chunks"]

CHIMNEY_MAX_BODY = 60000        # body bytes per frame (a state is cut into chunks)
CHIMNEY_REFUSED_TABLE_FULL = 1
CHIMNEY_REFUSED_BAD_STATE = 2   # the state does not decode or is not one the NIC runs
CHIMNEY_REFUSED_DUPLICATE = 3   # the 4-tuple is already offloaded (or spliced, tearing down)

UPLOAD_HOST_REQUEST = 1         # ChimneyUploadRequest from the host (also a request reason)
UPLOAD_APP_CLOSE = 2            # the app closes: the host finishes the connection itself
UPLOAD_PEER_FIN = 3             # the peer's FIN arrived (state CLOSE-WAIT or later)
UPLOAD_PEER_RST = 4             # an acceptable RST: state CLOSED, error "reset"
UPLOAD_REORDER = 5              # out-of-order data beyond what the NIC holds
UPLOAD_TIMEOUT = 6              # retransmission limit: the NIC's TCB reset the peer
UPLOAD_ERROR = 7                # the NIC could not run the TCB: no state (the host resets)
UPLOAD_REASONS = (UPLOAD_HOST_REQUEST, UPLOAD_APP_CLOSE, UPLOAD_PEER_FIN, UPLOAD_PEER_RST,
                  UPLOAD_REORDER, UPLOAD_TIMEOUT, UPLOAD_ERROR)
CHIMNEY_DATA_FIN = 0x01         # ChimneyData flags: the peer's FIN follows these bytes
CHIMNEY_SEND_FIN = 0x01         # ChimneySend flags: our FIN follows these bytes (shutdown)


class _ChMsg(_Msg):
    """A 0x090F message: the fixed header (with a u32 `length` as its last field) and
    `body` (bytes) right behind it."""

    __slots__ = ()
    ETHERTYPE = ETHERTYPE_CHIMNEY
    HAS_BODY = False

    def encode(self, check=True):
        b = _Msg.encode(self, check)
        if self.HAS_BODY:
            if len(self.body) > CHIMNEY_MAX_BODY:
                raise ValueError("%s: body above CHIMNEY_MAX_BODY" % type(self).__name__)
            b += bytes(self.body)
        return b


def _chunk(offset, n, total):
    if offset + n > total:
        _bad("chunk beyond total")


def _body_len(body):
    n = len(body)
    if n > CHIMNEY_MAX_BODY:
        raise ValueError("body above CHIMNEY_MAX_BODY")
    return n


class ChimneyOffload(_ChMsg):
    """0x090F type 0x20, host -> NIC (44 bytes + body): one chunk of an offload.

    flow_id: the host's id for the reports; key: the wire-side 4-tuple (frames from the
    peer, frame[26:38]); peer_mac / local_mac: the Ethernet addresses the NIC's segments
    carry (dst, src); total: length of the encoded state; offset: this chunk's offset in
    it; body: the chunk. The NIC takes the flow when the last chunk is in."""

    __slots__ = ("flow_id", "key", "peer_mac", "local_mac", "total", "offset", "body")
    TYPE = 0x20
    HAS_BODY = True
    _S = struct.Struct("!BBH" "I" "12s" "6s6s" "I" "I" "I")

    def __init__(self, flow_id, key, peer_mac, local_mac, total, offset, body=b""):
        self.flow_id = flow_id
        self.key = bytes(key)
        self.peer_mac = bytes(peer_mac)
        self.local_mac = bytes(local_mac)
        self.total = total
        self.offset = offset
        self.body = bytes(body)

    def _raw(self):
        return (self.flow_id, _bytes(self.key, 12, "key"), _bytes(self.peer_mac, 6, "mac"),
                _bytes(self.local_mac, 6, "mac"), self.total, self.offset,
                _body_len(self.body))

    @classmethod
    def _build(cls, t):
        fid, key, pmac, lmac, total, off, n = t
        _chunk(off, n, total)
        return cls(fid, key, pmac, lmac, total, off)


class ChimneyAccepted(_FlowKey, _ChMsg):
    """0x090F type 0x21, NIC -> host (20 bytes): the NIC runs the connection now."""

    __slots__ = ("flow_id", "key")
    TYPE = 0x21


class ChimneyRefused(_FlowReason, _ChMsg):
    """0x090F type 0x22, NIC -> host (24 bytes): not taken, the host keeps the TCB
    (it never stopped being the host's). reason: CHIMNEY_REFUSED_*."""

    __slots__ = ("flow_id", "key", "reason")
    TYPE = 0x22
    REASONS = (CHIMNEY_REFUSED_TABLE_FULL, CHIMNEY_REFUSED_DUPLICATE)


class _Stream(_ChMsg):
    """The layout of ChimneyData, ChimneySend and ChimneyUpload (36 bytes + body): flow
    id, key, a byte (flags or reason), two reserved bytes, two u32 (stream positions)
    and the body's length -- the fields their __slots__ name, in this order."""

    __slots__ = ()
    HAS_BODY = True
    _S = struct.Struct("!BBH" "I" "12s" "BBH" "I" "I" "I")

    def _raw(self):
        fid, key, byte, u, v, body = [getattr(self, s) for s in self.__slots__]
        return (fid, _bytes(key, 12, "key"), byte, 0, 0, u, v, _body_len(body))


class ChimneyData(_Stream):
    """0x090F type 0x23, NIC -> host (36 bytes + body): in-order bytes the NIC received
    and acknowledged. offset: stream offset (mod 2**32, counted from the offload) of the
    body's first byte; acked: how many of the host's bytes (ChimneySend offsets) the peer
    has acknowledged so far (mod 2**32); flags: CHIMNEY_DATA_FIN. An empty body reports
    `acked` alone (a send completion)."""

    __slots__ = ("flow_id", "key", "flags", "offset", "acked", "body")
    TYPE = 0x23

    def __init__(self, flow_id, key, flags=0, offset=0, acked=0, body=b""):
        self.flow_id = flow_id
        self.key = bytes(key)
        self.flags = flags
        self.offset = offset
        self.acked = acked
        self.body = bytes(body)

    @classmethod
    def _build(cls, t):
        fid, key, fl, p1, p2, off, acked, _n = t
        _flags(fl, CHIMNEY_DATA_FIN)
        _zero(p1, p2)
        return cls(fid, key, fl, off, acked)


class ChimneySend(_Stream):
    """0x090F type 0x24, host -> NIC (36 bytes + body): bytes for the NIC to send.
    offset: their stream offset (mod 2**32, counted from the offload); the NIC takes
    only the next bytes in order (a repeat or a gap is dropped and counted). read: how
    many of the received bytes (ChimneyData offsets) the app has consumed (mod 2**32):
    the NIC delivers at most the receive buffer's size beyond it, so a slow reader
    closes the TCB's window as it would on the host. An empty body: a credit only.
    flags: CHIMNEY_SEND_FIN, the app shut its sending side down after these bytes (the
    NIC's TCB queues our FIN; the connection stays offloaded until the peer's FIN)."""

    __slots__ = ("flow_id", "key", "flags", "offset", "read", "body")
    TYPE = 0x24

    def __init__(self, flow_id, key, offset=0, read=0, body=b"", flags=0):
        self.flow_id = flow_id
        self.key = bytes(key)
        self.flags = flags
        self.offset = offset
        self.read = read
        self.body = bytes(body)

    @classmethod
    def _build(cls, t):
        fid, key, fl, p1, p2, off, read, _n = t
        _flags(fl, CHIMNEY_SEND_FIN)
        _zero(p1, p2)
        return cls(fid, key, off, read, b"", fl)


class ChimneyUploadRequest(_FlowReason, _ChMsg):
    """0x090F type 0x25, host -> NIC (24 bytes): give the connection back.
    reason: UPLOAD_HOST_REQUEST (the default) or UPLOAD_APP_CLOSE."""

    __slots__ = ("flow_id", "key", "reason")
    TYPE = 0x25
    REASONS = (UPLOAD_HOST_REQUEST, UPLOAD_APP_CLOSE)


class ChimneyUpload(_Stream):
    """0x090F type 0x26, NIC -> host (36 bytes + body): one chunk of the state coming
    back (total / offset as in ChimneyOffload). The NIC forgot the flow when it sent
    the first chunk; the host owns it once the last one is in. reason: UPLOAD_*."""

    __slots__ = ("flow_id", "key", "reason", "total", "offset", "body")
    TYPE = 0x26

    def __init__(self, flow_id, key, reason, total, offset, body=b""):
        self.flow_id = flow_id
        self.key = bytes(key)
        self.reason = reason
        self.total = total
        self.offset = offset
        self.body = bytes(body)

    @classmethod
    def _build(cls, t):
        fid, key, reason, p1, p2, total, off, n = t
        _enum(reason, UPLOAD_HOST_REQUEST, UPLOAD_ERROR, "reason")
        _zero(p1, p2)
        _chunk(off, n, total)
        return cls(fid, key, reason, total, off)


CHIMNEY_MESSAGES = (ChimneyOffload, ChimneyAccepted, ChimneyRefused, ChimneyData,
                    ChimneySend, ChimneyUploadRequest, ChimneyUpload)
_CH_BY_TYPE = {m.TYPE: m for m in CHIMNEY_MESSAGES}


def decode_chimney(frame):
    """A whole 0x090F frame -> its message, body included (trailing Ethernet padding
    ignored). Raises WireError (CTL_DROP_REASONS)."""
    if _ethertype(frame) != ETHERTYPE_CHIMNEY:
        raise WireError("ctl_bad_ethertype", "not 0x090f")
    buf = memoryview(frame)[14:]
    cls, t = _read_header(buf, _CH_BY_TYPE)
    msg = cls._build(t)
    if cls.HAS_BODY:
        n = t[-1]
        if n > CHIMNEY_MAX_BODY:
            raise WireError("ctl_bad_length", "body %d" % n)
        size = cls._S.size
        if len(buf) < size + n:
            raise WireError("ctl_short", cls.__name__ + " body")
        msg.body = bytes(buf[size:size + n])
    return msg


def state_chunks(blob):
    """(total, offset, chunk) pieces of an encoded state, CHIMNEY_MAX_BODY at most each
    (one empty piece for an empty blob)."""
    n = len(blob)
    return [(n, off, bytes(blob[off:off + CHIMNEY_MAX_BODY]))
            for off in range(0, max(n, 1), CHIMNEY_MAX_BODY)]
