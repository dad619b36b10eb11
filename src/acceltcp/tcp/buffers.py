"""The send and receive buffers' two operations, with opportunistic zero-copy (AccelTCP
§5.2, ``TcpConfig.zero_copy``; tcp.connection's theory of operation).

A buffer is a ``bytearray``, or -- zero-copy -- the ``bytes`` object it was handed
while it was empty (a received segment's payload, the app's bytes), kept by reference:
nothing can change it. ``joined`` appends, ``without_front`` drops what was read or
acknowledged; both turn a kept reference into a ``bytearray`` (one copy) when it must
change.
"""

__all__ = ["joined", "without_front"]


def joined(buf, data, zero_copy: bool):
    """`buf` with `data` after it: `data` itself when `buf` is empty and `data` is
    ``bytes`` (zero-copy), else a ``bytearray`` of both (`buf` extended in place when it
    is one)."""
    if not buf and data.__class__ is bytes and zero_copy:
        return data
    if buf.__class__ is not bytearray:
        buf = bytearray(buf)
    buf += data
    return buf


def without_front(buf, k: int):
    """`buf` without its first `k` bytes (a ``bytearray`` shortened in place)."""
    if buf.__class__ is bytearray:
        if k >= len(buf):
            buf.clear()
        else:
            del buf[:k]
        return buf
    return bytearray(buf[k:]) if k < len(buf) else b""
