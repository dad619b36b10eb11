"""Modular 32-bit sequence-number arithmetic (RFC 9293 §3.4).

Sequence numbers live in a ring of 2**32 values; comparisons are meaningful only
between numbers less than 2**31 apart (windows are < 2**30 even with window
scaling, RFC 7323 §2.3).  ``seq_diff(a, b)`` is the signed distance a - b folded
into (-2**31, 2**31]; every comparison is defined through it, so for one
argument order ``seq_lt == not seq_ge`` and ``seq_gt == not seq_le`` always
hold.  At distance exactly 2**31 the ring is ambiguous: ``seq_gt(a, b)`` and
``seq_gt(b, a)`` are then both true (like Linux ``after()``); callers never get
there.

These are called several times per segment: keep them one expression each.
"""

SEQ_MOD = 1 << 32
_MASK = 0xFFFFFFFF
_HALF = 0x80000000

__all__ = [
    "SEQ_MOD",
    "seq_add",
    "seq_diff",
    "seq_lt",
    "seq_le",
    "seq_gt",
    "seq_ge",
    "seq_max",
    "seq_min",
    "seq_in_window",
]


def seq_add(a: int, n: int) -> int:
    """(a + n) mod 2**32; n may be negative."""
    return (a + n) & _MASK


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b in (-2**31, 2**31]."""
    d = (a - b) & _MASK
    return d - SEQ_MOD if d > _HALF else d


def seq_lt(a: int, b: int) -> bool:
    """a < b  (seq_diff(a, b) < 0)."""
    return ((a - b) & _MASK) > _HALF


def seq_le(a: int, b: int) -> bool:
    """a <= b (seq_diff(a, b) <= 0)."""
    return ((b - a) & _MASK) < _HALF


def seq_gt(a: int, b: int) -> bool:
    """a > b  (seq_diff(a, b) > 0)."""
    return ((b - a) & _MASK) >= _HALF


def seq_ge(a: int, b: int) -> bool:
    """a >= b (seq_diff(a, b) >= 0)."""
    return ((a - b) & _MASK) <= _HALF


def seq_max(a: int, b: int) -> int:
    """The later of a and b."""
    return a if ((a - b) & _MASK) <= _HALF else b


def seq_min(a: int, b: int) -> int:
    """The earlier of a and b."""
    return a if ((b - a) & _MASK) < _HALF else b


def seq_in_window(x: int, left: int, size: int) -> bool:
    """left <= x < left + size on the ring (RFC 9293 §3.10.7.4 test); size 0 => False."""
    return ((x - left) & _MASK) < size
