"""What every control header shares: the EtherTypes, the preamble, the field checks and
the message base class (`_Msg`), and the layouts several messages have in common.

A message class declares its ``_S`` (a ``struct.Struct`` of the whole header, preamble
included), ``_raw()`` (its fields in wire order, without the preamble) and ``_build(t)``
(the message from those fields, raising ``WireError("ctl_bad_field")`` on a value out of
range); `_Msg` does the rest. `_read_header` checks a preamble against a TYPE table; the
frames are documented in docs/control-frames.md.
"""

import struct

from ..errors import WireError

__all__ = ["VERSION", "ETHERTYPE_NEW_CONNECTION", "ETHERTYPE_TEARDOWN", "ETHERTYPE_SPLICE",
           "ETHERTYPE_SPLICE_CLOSED", "ETHERTYPE_CONTROL", "ETHERTYPE_CHIMNEY",
           "OFFLOAD_ETHERTYPES", "CTL_DROP_REASONS", "WS_NONE"]

VERSION = 1

ETHERTYPE_NEW_CONNECTION = 0x090A
ETHERTYPE_TEARDOWN = 0x090B
ETHERTYPE_SPLICE = 0x090C
ETHERTYPE_SPLICE_CLOSED = 0x090D
ETHERTYPE_CONTROL = 0x090E
ETHERTYPE_CHIMNEY = 0x090F
OFFLOAD_ETHERTYPES = frozenset(range(0x090A, 0x0910))

#: Every WireError.reason these codecs raise (drop-counter keys, like DROP_REASONS).
CTL_DROP_REASONS = (
    "ctl_short",          # frame < 14 bytes, or fewer bytes than the preamble / header length
    "ctl_bad_ethertype",  # not an offload EtherType (or, for unwrap, not 0x090A/0x090B)
    "ctl_bad_version",    # version byte != VERSION
    "ctl_bad_type",       # unknown type byte, or a type not carried by this EtherType
    "ctl_bad_length",     # header-length field != the fixed size of the type
    "ctl_bad_field",      # a field outside its range: wscale, enum, flags, nonzero padding
)

WS_NONE = 0xFF                  # wire value of "no Window Scale option" (None in Python)

_F_SACK = 0x01                  # flag byte bits (Listen, NewConnection, Teardown)
_F_TS = 0x02
_F_DEFER = 0x04                 # Listen only: defer the handover to the first data

_PRE = struct.Struct("!BBH")


def _bad(detail):
    raise WireError("ctl_bad_field", detail)


def _ws_in(v, what="wscale"):
    if v == WS_NONE:
        return None
    if v > 14:
        _bad(what)
    return v


def _ws_out(v):
    return WS_NONE if v is None else v


def _shift(v, what):
    if v > 14:
        _bad(what)
    return v


def _enum(v, lo, hi, what):
    if not lo <= v <= hi:
        _bad(what)
    return v


def _zero(*pads):
    if any(pads):
        _bad("reserved")


def _flags(v, allowed):
    if v & ~allowed:
        _bad("flags")
    return v


def _bytes(v, n, what):
    v = bytes(v)
    if len(v) != n:
        raise ValueError("%s must be %d bytes" % (what, n))
    return v


class _Msg:
    """Base: equality/repr over the slots, encode/decode through the per-class Struct."""

    __slots__ = ()
    ETHERTYPE = ETHERTYPE_CONTROL
    TYPE = 0
    CARRIES_SEGMENT = False
    _S = None        # struct.Struct of the whole header, preamble included

    def __eq__(self, other):
        return type(self) is type(other) and all(
            getattr(self, s) == getattr(other, s) for s in self.__slots__)

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join(
            "%s=%r" % (s, getattr(self, s)) for s in self.__slots__))

    def encode(self, check=True):
        """The control header (bytes). ValueError on a value the decoder would refuse
        (``check=False``: only struct's range checks, for values built by this project's
        own code on a hot path)."""
        try:
            b = self._S.pack(VERSION, self.TYPE, self._S.size, *self._raw())
            if check:
                self._build(self._S.unpack(b)[3:])
        except struct.error as e:
            raise ValueError(str(e)) from None
        except WireError as e:
            raise ValueError("%s: %s" % (type(self).__name__, e)) from None
        return b

    def frame(self, eth_dst, eth_src):
        """Ethernet header (this message's EtherType) + encode(); standalone messages only."""
        if self.CARRIES_SEGMENT:
            raise TypeError("%s travels in front of a segment: use wrap()" % type(self).__name__)
        return _bytes(eth_dst, 6, "eth_dst") + _bytes(eth_src, 6, "eth_src") + \
            self.ETHERTYPE.to_bytes(2, "big") + self.encode()


# Layouts shared by several messages (a message class names its fields in its own
# __slots__; __eq__ and __repr__ read them there).

class _IdOnly(_Msg):
    """One u32 (8 bytes): StatusRequest, SpliceInstalled."""

    __slots__ = ()
    _S = struct.Struct("!BBH" "I")

    def _raw(self):
        return (getattr(self, self.__slots__[0]),)

    @classmethod
    def _build(cls, t):
        return cls(t[0])


class _FlowKey:
    """A flow id and its 4-tuple key (20 bytes): TeardownAccepted, ChimneyAccepted."""

    __slots__ = ()
    _S = struct.Struct("!BBH" "I" "12s")

    def __init__(self, flow_id, key):
        self.flow_id = flow_id
        self.key = bytes(key)

    def _raw(self):
        return (self.flow_id, _bytes(self.key, 12, "key"))

    @classmethod
    def _build(cls, t):
        return cls(*t)


class _FlowReason:
    """A flow id, its 4-tuple key and a reason from REASONS = (lowest, highest), the
    lowest the default (24 bytes): TeardownRefused, ChimneyRefused, ChimneyUploadRequest."""

    __slots__ = ()
    _S = struct.Struct("!BBH" "I" "12s" "BBH")
    REASONS = (0, 0)

    def __init__(self, flow_id, key, reason=None):
        self.flow_id = flow_id
        self.key = bytes(key)
        self.reason = self.REASONS[0] if reason is None else reason

    def _raw(self):
        return (self.flow_id, _bytes(self.key, 12, "key"), self.reason, 0, 0)

    @classmethod
    def _build(cls, t):
        fid, key, reason, p1, p2 = t
        _enum(reason, *cls.REASONS, "reason")
        _zero(p1, p2)
        return cls(fid, key, reason)


def _ethertype(frame):
    if len(frame) < 14:
        raise WireError("ctl_short", "ethernet")
    et = (frame[12] << 8) | frame[13]
    if et not in OFFLOAD_ETHERTYPES:
        raise WireError("ctl_bad_ethertype", "0x%04x" % et)
    return et


def _read_header(buf, by_type, ethertype=None):
    """The preamble at the start of `buf` checked against `by_type` ({TYPE: class}; with
    `ethertype`, the class must be one that EtherType carries) -> (class, its fields
    after the preamble). Raises WireError."""
    if len(buf) < 4:
        raise WireError("ctl_short", "preamble")
    version, typ, hlen = _PRE.unpack_from(buf)
    if version != VERSION:
        raise WireError("ctl_bad_version", str(version))
    cls = by_type.get(typ)
    if cls is None or (ethertype is not None and cls.ETHERTYPE != ethertype):
        raise WireError("ctl_bad_type", "0x%02x" % typ)
    size = cls._S.size
    if hlen != size:
        raise WireError("ctl_bad_length", "%d != %d" % (hlen, size))
    if len(buf) < size:
        raise WireError("ctl_short", cls.__name__)
    return cls, cls._S.unpack_from(buf)[3:]
