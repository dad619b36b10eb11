"""Internet checksum (RFC 1071) and incremental update (RFC 1624).

Speed trick: 2**16 == 1 (mod 0xFFFF), so the one's-complement sum of the 16-bit
big-endian words of `data` is congruent mod 0xFFFF to `int.from_bytes(data, "big")`
(odd length: pad a zero byte == shift left 8). One C-level conversion plus one
bignum reduction beats `sum(array("H"))` by 3-5x from 64 B up (see __main__).
Corner (RFC 1624 §3): with end-around carry the folded sum is 0x0000 only when
every word is zero; otherwise it lies in 1..0xFFFF, so a residue of 0 means 0xFFFF
("negative zero"). Consequently a computed checksum is never 0xFFFF for data that
is not all zero, and the checksum of a sum s > 0 is simply `-s % 0xFFFF`.
A received header/segment verifies iff its total sum (incl. checksum field and,
for TCP, the pseudo-header) is == 0 (mod 0xFFFF), which accepts either encoding
of zero in the field.
"""

__all__ = [
    "ones_sum", "internet_checksum", "pseudo_header_sum",
    "checksum_update16", "checksum_update32",
]

_from_bytes = int.from_bytes   # bound once: saves a lookup per call on the hot path
_FOLD_BITS = 8192   # above this, halve-and-add before `% 0xFFFF` (2x faster at 64 KiB)


def _fold(n):
    """Reduce a big non-negative int keeping it congruent mod 0xFFFF (and != 0 iff n != 0)."""
    b = n.bit_length()
    while b > _FOLD_BITS:
        k = (b >> 5) << 4            # ~half, a multiple of 16 bits: 2**k == 1 (mod 0xFFFF)
        n = (n >> k) + (n & ((1 << k) - 1))
        b = n.bit_length()
    return n


def _raw_sum(data):
    """An int congruent (mod 0xFFFF) to the 16-bit word sum of `data`; 0 iff data is all zero."""
    n = _from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8                      # RFC 1071: pad odd length with a zero byte
    if n.bit_length() > _FOLD_BITS:
        n = _fold(n)
    return n


def ones_sum(data, initial=0):
    """Folded 16-bit one's-complement sum of `data` (+ `initial`, any non-negative int)."""
    n = _raw_sum(data) + initial
    if not n:
        return 0
    return n % 0xFFFF or 0xFFFF


def internet_checksum(data, initial=0):
    """RFC 1071 checksum: one's complement of ones_sum(data, initial)."""
    return 0xFFFF - ones_sum(data, initial)


def pseudo_header_sum(src, dst, proto, length):
    """Folded sum of the IPv4 pseudo-header (RFC 9293 §3.1): src, dst (4 bytes), proto, length."""
    n = _from_bytes(src, "big") + _from_bytes(dst, "big") + proto + length
    if not n:
        return 0
    return n % 0xFFFF or 0xFFFF


def checksum_update16(csum, old, new):
    """RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m') for one 16-bit field changing old -> new."""
    s = (0xFFFF - csum) + (0xFFFF - old) + new
    return -s % 0xFFFF if s else 0xFFFF


def checksum_update32(csum, old, new):
    """RFC 1624 eqn. 3 for a 32-bit field (e.g. seq/ack, an IPv4 address) changing old -> new."""
    s = (0xFFFF - csum) + (0xFFFFFFFF - old) + new   # ~old over 32 bits == ~hi, ~lo
    return -s % 0xFFFF if s else 0xFFFF


if __name__ == "__main__":   # micro-benchmark: python -m acceltcp.wire.checksum
    import os
    import sys
    import timeit
    from array import array

    def _array_sum(data):
        if len(data) & 1:
            data = bytes(data) + b"\0"
        s = sum(array("H", data))
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
        if sys.byteorder == "little":   # RFC 1071 §2(B): byte-order independent, swap at the end
            s = ((s & 0xFF) << 8) | (s >> 8)
        return s

    for size in (20, 64, 1460, 9000, 65536):
        d = os.urandom(size)
        assert ones_sum(d) == _array_sum(d)
        num = 100000 if size <= 2000 else 300
        res = []
        for f in (ones_sum, _array_sum):
            t = min(timeit.repeat(lambda: f(d), number=num, repeat=5)) / num
            res.append(t * 1e6)
        print("%6d B  from_bytes %8.3f us   array('H') %8.3f us   ratio %.2fx"
              % (size, res[0], res[1], res[1] / res[0]))
