"""BLAKE2s split where the XDP program needs it (RFC 7693).

tcp/syncookie.py hashes each cookie message with ``blake2s(key=K_g, digest_size=3,
person=b"acctcpsc")``.  For a 22-byte message that is two compressions: the key block
(the parameter block folded into IV, the key padded to 64 bytes, t = 64, not last) and
the message block (t = 86, last).  The first depends only on the key generation, so the
control side computes it here -- ``keyed_state(K_g)``, eight 32-bit words -- and writes it
to the atcp_clock map; the program (blake2s.h) does the second.  ``finish`` is that
second compression in Python, for the tests (it must equal hashlib's digest).
"""

import hashlib
import struct

__all__ = ["IV", "compress", "keyed_state", "generation_key", "cookie_state", "finish"]

IV = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
      0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19)
SIGMA = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
    (14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3),
    (11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4),
    (7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8),
    (9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13),
    (2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9),
    (12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11),
    (13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10),
    (6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5),
    (10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0),
)
_M = 0xFFFFFFFF
_BLOCK = struct.Struct("<16I")
_U64 = 0xFFFFFFFFFFFFFFFF


def _rotr(x, n):
    return (x >> n | x << (32 - n)) & _M


def compress(h, block, t, last):
    """RFC 7693 §3.2 F: the new chaining value (tuple of 8) after one 64-byte block."""
    m = _BLOCK.unpack(block)
    v = list(h) + list(IV)
    v[12] ^= t & _M
    v[13] ^= t >> 32 & _M
    if last:
        v[14] ^= _M
    for s in SIGMA:
        for i, (a, b, c, d) in enumerate(((0, 4, 8, 12), (1, 5, 9, 13), (2, 6, 10, 14),
                                          (3, 7, 11, 15), (0, 5, 10, 15), (1, 6, 11, 12),
                                          (2, 7, 8, 13), (3, 4, 9, 14))):
            x, y = m[s[2 * i]], m[s[2 * i + 1]]
            v[a] = (v[a] + v[b] + x) & _M
            v[d] = _rotr(v[d] ^ v[a], 16)
            v[c] = (v[c] + v[d]) & _M
            v[b] = _rotr(v[b] ^ v[c], 12)
            v[a] = (v[a] + v[b] + y) & _M
            v[d] = _rotr(v[d] ^ v[a], 8)
            v[c] = (v[c] + v[d]) & _M
            v[b] = _rotr(v[b] ^ v[c], 7)
    return tuple(h[i] ^ v[i] ^ v[i + 8] for i in range(8))


def keyed_state(key, digest_size=3, person=b"acctcpsc"):
    """The chaining value after the key block of blake2s(key=key, digest_size, person),
    i.e. what hashlib holds before the first message byte (RFC 7693 §2.5, §3.3)."""
    if not 1 <= len(key) <= 32 or len(person) > 8:
        raise ValueError("key 1..32 bytes, person <= 8 bytes")
    p = digest_size | len(key) << 8 | 1 << 16 | 1 << 24      # fanout 1, depth 1
    pw = struct.unpack("<2I", person.ljust(8, b"\0"))
    h = [IV[0] ^ p, IV[1], IV[2], IV[3], IV[4], IV[5], IV[6] ^ pw[0], IV[7] ^ pw[1]]
    return compress(h, key.ljust(64, b"\0"), 64, False)


def generation_key(secret, gen):
    """K_g of syncookie.SynCookieJar._derive (the same expression)."""
    return hashlib.blake2s((gen & _U64).to_bytes(8, "big"), key=secret, digest_size=32,
                           person=b"acctcpck").digest()


def cookie_state(secret, gen):
    """The state the XDP program needs for generation `gen`: 8 words."""
    return keyed_state(generation_key(secret, gen))


def finish(h, msg, digest_size=3):
    """The digest of a message <= 64 bytes following a key block (the tests' model of
    blake2s.h)."""
    out = compress(h, bytes(msg).ljust(64, b"\0"), 64 + len(msg), True)
    return struct.pack("<8I", *out)[:digest_size]
