"""Plain-value encoding of a chimney state (a tree of tuples over None, bool, int,
float, str, bytes): one tag byte per value, then its payload (network byte order).
`encode_value` / `decode_value`; ``tcp.tcbstate.TcbState`` is such a value, and
ChimneyOffload / ChimneyUpload carry it in chunks."""

import struct

from ..errors import WireError
from .base import _bad

__all__ = ["encode_value", "decode_value"]

_V_NONE, _V_FALSE, _V_TRUE, _V_INT, _V_FLOAT, _V_BYTES, _V_STR, _V_TUPLE = range(8)
_Q = struct.Struct("!q")
_D = struct.Struct("!d")
_L = struct.Struct("!I")
_MAX_DEPTH = 8


def encode_value(v):
    """A plain value -> bytes (ValueError for anything else, or an int outside i64)."""
    out = bytearray()
    _enc(v, out, 0)
    return bytes(out)


def _enc(v, out, depth):
    if v is None:
        out.append(_V_NONE)
    elif v is True or v is False:
        out.append(_V_TRUE if v else _V_FALSE)
    elif type(v) is int:
        if not -(1 << 63) <= v < (1 << 63):
            raise ValueError("int outside i64")
        out.append(_V_INT)
        out += _Q.pack(v)
    elif type(v) is float:
        out.append(_V_FLOAT)
        out += _D.pack(v)
    elif type(v) is bytes:
        out.append(_V_BYTES)
        out += _L.pack(len(v))
        out += v
    elif type(v) is str:
        b = v.encode("ascii")
        out.append(_V_STR)
        out += _L.pack(len(b))
        out += b
    elif type(v) is tuple:
        if depth >= _MAX_DEPTH:
            raise ValueError("nested too deep")
        out.append(_V_TUPLE)
        out += _L.pack(len(v))
        for x in v:
            _enc(x, out, depth + 1)
    else:
        raise ValueError("not a plain value: %s" % type(v).__name__)


def decode_value(buf):
    """bytes -> the plain value; WireError (ctl_short / ctl_bad_field) when malformed
    (an unknown tag, a truncated value, trailing bytes, nesting deeper than 8)."""
    mv = memoryview(buf)
    v, pos = _dec(mv, 0, 0)
    if pos != len(mv):
        _bad("trailing bytes after the state")
    return v


def _need(mv, pos, n):
    if pos + n > len(mv):
        raise WireError("ctl_short", "state value")


def _dec(mv, pos, depth):
    _need(mv, pos, 1)
    tag = mv[pos]
    pos += 1
    if tag == _V_NONE:
        return None, pos
    if tag == _V_FALSE:
        return False, pos
    if tag == _V_TRUE:
        return True, pos
    if tag == _V_INT:
        _need(mv, pos, 8)
        return _Q.unpack_from(mv, pos)[0], pos + 8
    if tag == _V_FLOAT:
        _need(mv, pos, 8)
        return _D.unpack_from(mv, pos)[0], pos + 8
    if tag == _V_BYTES or tag == _V_STR:
        _need(mv, pos, 4)
        n = _L.unpack_from(mv, pos)[0]
        pos += 4
        _need(mv, pos, n)
        b = bytes(mv[pos:pos + n])
        if tag == _V_STR:
            try:
                return b.decode("ascii"), pos + n
            except UnicodeDecodeError:
                _bad("state string")
        return b, pos + n
    if tag == _V_TUPLE:
        if depth >= _MAX_DEPTH:
            _bad("state nested too deep")
        _need(mv, pos, 4)
        n = _L.unpack_from(mv, pos)[0]
        pos += 4
        if n > len(mv) - pos:             # each item is at least its tag byte
            raise WireError("ctl_short", "state tuple")
        items = []
        for _ in range(n):
            x, pos = _dec(mv, pos, depth + 1)
            items.append(x)
        return tuple(items), pos
    _bad("state tag %d" % tag)
