"""Internet checksum (RFC 1071) and RFC 1624 incremental updates vs a naive reference."""

import os
import struct

import pytest
from hypothesis import given, settings, strategies as st

from acceltcp.wire.checksum import (
    checksum_update16, checksum_update32, internet_checksum, ones_sum, pseudo_header_sum)

SETTINGS = settings(max_examples=400, deadline=None)


def naive_ones_sum(data, initial=0):
    """RFC 1071 §4.1, word by word with end-around carry."""
    if len(data) & 1:
        data = bytes(data) + b"\0"
    s = initial
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def naive_checksum(data, initial=0):
    return ~naive_ones_sum(data, initial) & 0xFFFF


@pytest.mark.parametrize("data", [
    b"", b"\x00", b"\x00\x00", b"\xff\xff", b"\xff", b"\xff\xff\xff\xff", b"\x00" * 64,
    b"\xff" * 63, b"\x01", b"\x80\x00\x80\x00", b"\xff\xfe\x00\x01",
    bytes(range(256)), os.urandom(1460), os.urandom(1461), os.urandom(65536), os.urandom(65535),
    b"\xff" * 65536, b"\x00" * 65535 + b"\x01",
])
def test_fixed_vectors(data):
    assert ones_sum(data) == naive_ones_sum(data)
    assert internet_checksum(data) == naive_checksum(data)


def test_rfc1071_example():
    # RFC 1071 §3: 00 01 f2 03 f4 f5 f6 f7 -> sum 0xddf2
    assert ones_sum(bytes.fromhex("0001f203f4f5f6f7")) == 0xDDF2


def test_zero_corner():
    # All-zero data: sum +0, checksum 0xFFFF. Non-zero data whose sum is -0 (0xFFFF):
    # checksum 0x0000, never 0xFFFF (RFC 1624 §3).
    assert ones_sum(b"\0" * 10) == 0 and internet_checksum(b"\0" * 10) == 0xFFFF
    assert ones_sum(b"\xff\xff") == 0xFFFF and internet_checksum(b"\xff\xff") == 0
    assert ones_sum(b"\x80\x00\x7f\xff") == 0xFFFF
    assert ones_sum(b"\0\0", 0xFFFF) == 0xFFFF
    assert ones_sum(b"", 0x1FFFE) == 0xFFFF


@SETTINGS
@given(st.one_of(st.binary(max_size=200), st.binary(min_size=1000, max_size=5000)),
       st.integers(0, 0x3FFFF))
def test_matches_naive(data, initial):
    assert ones_sum(data, initial) == naive_ones_sum(data, initial)
    assert internet_checksum(data, initial) == naive_checksum(data, initial)


@SETTINGS
@given(st.binary(max_size=100), st.sampled_from([bytearray, memoryview, bytes]))
def test_buffer_types(data, kind):
    assert ones_sum(kind(data)) == naive_ones_sum(data)


@SETTINGS
@given(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4),
       st.integers(0, 255), st.integers(0, 0xFFFF))
def test_pseudo_header(src, dst, proto, length):
    ph = src + dst + struct.pack("!BBH", 0, proto, length)
    assert pseudo_header_sum(src, dst, proto, length) == naive_ones_sum(ph)


def _words(n):
    return st.lists(st.integers(0, 0xFFFF), min_size=n, max_size=n)


corner16 = st.one_of(st.integers(0, 0xFFFF), st.sampled_from([0, 0xFFFF, 1, 0xFFFE]))


@SETTINGS
@given(st.lists(corner16, min_size=1, max_size=30), st.data())
def test_update16_equals_recompute(words, data):
    i = data.draw(st.integers(0, len(words) - 1))
    new = data.draw(corner16)
    before = struct.pack("!%dH" % len(words), *words)
    old = words[i]
    words[i] = new
    after = struct.pack("!%dH" % len(words), *words)
    if not any(after):          # all-zero data: not a header; both encodings of 0 differ
        return
    assert checksum_update16(internet_checksum(before), old, new) == internet_checksum(after)


corner32 = st.one_of(st.integers(0, 2**32 - 1),
                     st.sampled_from([0, 0xFFFFFFFF, 0xFFFF, 0xFFFF0000, 1, 2**32 - 2]))


@SETTINGS
@given(st.lists(corner16, min_size=2, max_size=30), st.data())
def test_update32_equals_recompute(words, data):
    i = data.draw(st.integers(0, len(words) - 2))     # any 16-bit-aligned position
    new = data.draw(corner32)
    before = struct.pack("!%dH" % len(words), *words)
    old = (words[i] << 16) | words[i + 1]
    words[i], words[i + 1] = new >> 16, new & 0xFFFF
    after = struct.pack("!%dH" % len(words), *words)
    if not any(after):
        return
    assert checksum_update32(internet_checksum(before), old, new) == internet_checksum(after)


@SETTINGS
@given(st.integers(0, 0xFFFF), corner16, corner16)
def test_update16_rest_sum(rest, old, new):
    """Data = [rest-word, m]: covers every sum, including those landing on 0xFFFF."""
    before, after = struct.pack("!HH", rest, old), struct.pack("!HH", rest, new)
    if not any(after):
        return
    assert checksum_update16(internet_checksum(before), old, new) == internet_checksum(after)


def test_rfc1624_section4_example():
    # Sum of the other words 0xCD7A, m 0x5555 -> 0x3285: HC 0xDD2F -> 0x0000
    # (eqn. 2 of RFC 1141 would wrongly give 0xFFFF).
    assert internet_checksum(struct.pack("!HH", 0xCD7A, 0x5555)) == 0xDD2F
    assert internet_checksum(struct.pack("!HH", 0xCD7A, 0x3285)) == 0x0000
    assert checksum_update16(0xDD2F, 0x5555, 0x3285) == 0x0000


def test_update_no_change():
    for c in (0, 1, 0x1234, 0xFFFE):
        assert checksum_update16(c, 0xABCD, 0xABCD) == c
        assert checksum_update32(c, 0xDEADBEEF, 0xDEADBEEF) == c
