"""Opportunistic zero-copy (AccelTCP §5.2, ``TcpConfig.zero_copy``): immutable bytes are
kept by reference, everything else copied, and nothing on the wire depends on it.

The property: whatever the app does with its buffer after ``send`` -- overwrite the
bytearray it sent from, reuse it for the next message, send views of it -- the peer
receives exactly the bytes each ``send`` took, also when segments are lost and resent
from the send buffer later, and also when it releases a view it sent; and the segments
on the wire are the same with zero-copy on and off.
"""

import pytest
from hypothesis import given, settings, strategies as st

from acceltcp.tcp.config import TcpConfig
from .pair import Pair

KINDS = ("bytes", "view_of_bytes", "bytearray", "view_of_bytearray",
         "readonly_view_of_bytearray")


def _message(i, size):
    return bytes((i * 31 + j * 7) & 0xFF for j in range(size))


def _buffer(kind, data, shared):
    """`data` as the app hands it to ``send``; mutable kinds live in `shared`, the one
    buffer the app reuses for every message."""
    if kind == "bytes":
        return data
    if kind == "view_of_bytes":
        return memoryview(b"\0" + data + b"\0")[1:-1]
    shared[:] = data
    if kind == "bytearray":
        return shared
    view = memoryview(shared)
    return view if kind == "view_of_bytearray" else view.toreadonly()


def _run(ops, zero_copy):
    """Send `ops` (kind, size, drop) from a to b; a segment carrying data is dropped
    once where `drop` says so (resent later from the send buffer). -> (bytes taken by
    the sends, bytes b received, every segment a sent, sends kept by reference)."""
    cfg = TcpConfig(zero_copy=zero_copy, nodelay=False)
    p = Pair(config_a=cfg, config_b=cfg)
    p.handshake()
    shared = bytearray()
    taken, got, wire, kept = bytearray(), bytearray(), [], 0
    for i, (kind, size, drop) in enumerate(ops):
        data = _message(i, size)
        buf = _buffer(kind, data, shared)
        was_empty = not p.a.conn.sndbuf
        n = p.a.conn.send(buf, p.now)
        taken += data[:n]
        kept += was_empty and n == size and p.a.conn.sndbuf is buf
        if buf.__class__ is memoryview:
            buf.release()                             # done with the view
        if kind != "bytes" and kind != "view_of_bytes":
            shared[:] = b"\xee" * len(shared)         # the app reuses its buffer at once
        segs = p.a.take()
        wire += [(s.seq, s.flags, bytes(s.payload)) for s in segs]
        if drop:
            segs = [s for s in segs if not s.payload] + [s for s in segs if s.payload][1:]
        p.deliver(p.a, segs)
        p.deliver(p.b)
        got += p.b.conn.recv(1 << 30, p.now)
        p.now += 0.001
    for _ in range(50):                               # retransmissions until all is acked
        if p.a.conn.snd_una == p.a.conn.snd_max:
            break
        p.advance(2.0)
        wire += [(s.seq, s.flags, bytes(s.payload)) for s in p.a.sent]
        got += p.b.conn.recv(1 << 30, p.now)
    p.pump()
    got += p.b.conn.recv(1 << 30, p.now)
    return bytes(taken), bytes(got), wire, kept


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(KINDS), st.integers(1, 3000), st.booleans()),
                min_size=1, max_size=25))
def test_the_peer_gets_what_each_send_took_whatever_the_app_does_with_its_buffer(ops):
    taken, got, wire, _ = _run(ops, zero_copy=True)
    assert got == taken
    assert _run(ops, zero_copy=False)[2] == wire     # the same segments either way


@pytest.mark.parametrize("zero_copy", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_only_bytes_are_kept_by_reference(kind, zero_copy):
    p = Pair(config_a=TcpConfig(zero_copy=zero_copy))
    p.handshake()
    buf = _buffer(kind, _message(0, 100), bytearray())
    p.a.conn.send(buf, p.now)
    assert (p.a.conn.sndbuf is buf) == (zero_copy and kind == "bytes")


def test_recv_returns_the_segments_payload_itself_and_a_partial_read_copies_the_rest():
    p = Pair()
    p.handshake()
    p.a.conn.send(b"x" * 500, p.now)
    seg = p.a.take()[0]
    p.b.conn.on_segment(seg, p.now)
    assert p.b.conn.rcvbuf is seg.payload
    assert p.b.conn.recv(100, p.now) == b"x" * 100
    rest = p.b.conn.rcvbuf
    assert rest.__class__ is bytearray and rest == b"x" * 400
    p.advance(1.0)                                    # (Nagle: the 500 B acked first)
    p.a.conn.send(b"y" * 10, p.now)
    p.b.conn.on_segment(p.a.take()[0], p.now)         # appended to what is left
    assert p.b.conn.recv(1 << 20, p.now) == b"x" * 400 + b"y" * 10
    assert not p.b.conn.rcvbuf


def test_a_partial_ack_of_a_kept_send_copies_only_the_rest_once():
    p = Pair()
    p.handshake()
    data = bytes(range(256)) * 8                      # 2048 B: two segments
    p.a.conn.send(data, p.now)
    assert p.a.conn.sndbuf is data
    (first,) = p.a.take()                             # Nagle holds the 600 B rest
    p.deliver(p.a, [first])
    p.now += 1.0
    p.b.conn.on_timer(p.now)                          # b's delayed ACK of the first
    p.deliver(p.b)
    assert p.a.conn.sndbuf.__class__ is bytearray
    assert bytes(p.a.conn.sndbuf) == data[len(first.payload):]
    p.pump()
    p.advance(1.0)
    assert not p.a.conn.sndbuf and p.b.conn.recv(1 << 20, p.now) == data
