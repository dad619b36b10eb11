"""The offload pieces without a kernel (no root needed): the partial-checksum header
builder against the full builder, the vnet header codec, and two host stacks on
offloading devices exchanging TSO super-frames in memory, byte for byte like the same run without
offloads."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from acceltcp.io.tap import VNET_HDR_LEN, VnetHeader
from acceltcp.host.stack import HostStack
from acceltcp.wire.checksum import internet_checksum
from acceltcp.wire.tcp import (ACK, PSH, SYN, build_tcp_frame, build_tcp_header_partial,
                               tcp_options)

MAC_A = bytes.fromhex("02a7cc000001")
MAC_B = bytes.fromhex("02a7cc000002")
IP_A = bytes([198, 18, 0, 1])
IP_B = bytes([198, 18, 0, 2])


def complete(header, payload):
    """What the kernel does with NEEDS_CSUM: sum from byte 34 (field included), store."""
    cs = internet_checksum(header[34:] + payload)
    return header[:50] + cs.to_bytes(2, "big") + header[52:] + payload


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=4, max_size=4), st.binary(min_size=4, max_size=4),
       st.integers(0, 0xFFFF), st.integers(1, 0xFFFF), st.integers(1, 0xFFFF),
       st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF),
       st.sampled_from([b"", tcp_options(timestamps=(5, 7)),
                        tcp_options(timestamps=(1, 2), sack_blocks=((10, 20),))]),
       st.binary(min_size=1, max_size=3000))
def test_partial_header_completed_equals_full_frame(src, dst, ident, sport, dport, seq, ack,
                                                    window, options, payload):
    full = build_tcp_frame(MAC_B, MAC_A, src, dst, ident, sport, dport, seq, ack, ACK | PSH,
                           window, options, payload)
    hdr = build_tcp_header_partial(MAC_B, MAC_A, src, dst, ident, sport, dport, seq, ack,
                                   ACK | PSH, window, options, len(payload))
    assert len(hdr) == 54 + len(options)
    assert full[:50] == hdr[:50] and full[52:len(hdr)] == hdr[52:]
    assert complete(hdr, payload) == full


def test_vnet_header_roundtrip():
    h = VnetHeader(1, 1, 66, 1448, 34, 16)
    b = h.pack()
    assert len(b) == VNET_HDR_LEN == 10
    assert b == bytes([1, 1, 66, 0, 0xA8, 0x05, 34, 0, 16, 0])     # little endian
    u = VnetHeader.unpack(b)
    assert (u.flags, u.gso_type, u.hdr_len, u.gso_size, u.csum_start, u.csum_offset) == \
        (1, 1, 66, 1448, 34, 16)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class OffloadWire:
    """Two devices joined in memory. With offload, send_segment delivers the super-frame
    whole and trusted (what the kernel's LRO path hands a TAP reader); the frame, once
    its checksum is completed as the kernel would, must be a valid frame."""

    def __init__(self, offload=True):
        self.queue = []
        self.a = _Dev(self, MAC_A, offload)
        self.b = _Dev(self, MAC_B, offload)
        self.a.peer, self.b.peer = self.b, self.a
        self.segments = []              # (payload length, gso_size) of send_segment calls


class _Dev:
    def __init__(self, wire, mac, offload):
        self.wire = wire
        self.mac = mac
        self.offload = offload          # as io.tap.TapDevice: send_segment may be used
        self.stack = None
        self.peer = None

    def set_receiver(self, cb):
        pass

    def send(self, frame):
        self.wire.queue.append((self.peer, bytes(frame), False))
        return True

    def send_segment(self, header, payload, gso_size):
        frame = complete(header, bytes(payload))
        self.wire.segments.append((len(payload), gso_size))
        self.wire.queue.append((self.peer, frame, True))
        return True


def _run(wire, clock, until, limit=200000):
    stacks = (wire.a.stack, wire.b.stack)
    for _ in range(limit):
        if until():
            return True
        if wire.queue:
            dev, frame, ok = wire.queue.pop(0)
            dev.stack.receive_frame(frame, ok)
            continue
        nxt = [d for d in (s.next_deadline() for s in stacks) if d is not None]
        if not nxt:
            return until()
        clock.now = max(clock.now, min(nxt))
        for s in stacks:
            s.on_timer()
    return until()


def _exchange(offload, nbytes=600_000):
    from acceltcp.apps.bulk import SinkServer, Source
    clock = Clock()
    wire = OffloadWire(offload)
    a = HostStack(wire.a, IP_A, clock, strict=True)
    b = HostStack(wire.b, IP_B, clock, strict=True)
    wire.a.stack, wire.b.stack = a, b
    data = random.Random(9).randbytes(nbytes)
    sink = SinkServer(b, 9, digest=True)
    Source(a, IP_B, 9, data)
    assert _run(wire, clock, lambda: sink.closed == 1)
    assert sink.bytes == nbytes
    return sink.digest.hexdigest(), wire, a, b


def test_tso_super_frames_in_memory_same_bytes_as_without_offload():
    d_on, wire_on, a_on, b_on = _exchange(True)
    d_off, wire_off, a_off, b_off = _exchange(False)
    assert d_on == d_off
    assert wire_off.segments == [] and b_off.counters["csum_trusted"] == 0
    assert wire_on.segments, "no data went through send_segment"
    mss = max(g for _, g in wire_on.segments)
    assert all(g == mss for _, g in wire_on.segments)
    assert max(n for n, _ in wire_on.segments) > 10 * mss        # real super-segments
    assert b_on.counters["csum_trusted"] > 0
    assert a_on.counters["frames_out"] < a_off.counters["frames_out"] / 5
    assert not a_on.drops and not b_on.drops


def test_trusted_checksum_skips_verification_only_when_the_kernel_vouched():
    clock = Clock()
    wire = OffloadWire()
    b = HostStack(wire.b, IP_B, clock, strict=True)
    wire.b.stack = b
    b.listen(80)
    syn = bytearray(build_tcp_frame(MAC_B, MAC_A, IP_A, IP_B, 1, 40000, 80, 5, 0, SYN, 65535,
                                    tcp_options(mss=1460), b""))
    syn[50] ^= 0xFF                                   # break the TCP checksum
    b.receive_frame(bytes(syn), False)
    assert b.drops["tcp_bad_checksum"] == 1 and not wire.queue
    b.receive_frame(bytes(syn), True)                 # the kernel said: trust it
    assert b.drops["tcp_bad_checksum"] == 1
    assert b.counters["syns_received"] == 1 and wire.queue     # SYN-ACK (or ARP) out
