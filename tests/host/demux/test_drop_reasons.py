"""Every frame is either delivered or counted under a named drop reason; none raises."""

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acceltcp.host.stack import HOST_DROP_REASONS, OUTBOUND_DROP_REASONS
from acceltcp.wire.errors import DROP_REASONS
from acceltcp.wire.ethernet import BROADCAST_MAC
from acceltcp.wire.ipv4 import ipv4_header
from acceltcp.wire.tcp import ACK, SYN, build_tcp

from ..util import (OTHER_IP, PEER_IP, PEER_MAC, US_IP, US_MAC, arp_request, syn, tcp_frame)

KNOWN = set(DROP_REASONS) | set(HOST_DROP_REASONS)


def accounted(stack):
    """frames_in == frames_delivered + inbound drops, always."""
    inbound = sum(n for r, n in stack.drops.items() if r not in OUTBOUND_DROP_REASONS)
    assert stack.counters["frames_delivered"] + inbound == stack.counters["frames_in"]
    return stack.counters["frames_delivered"] + inbound


def ipv4_frame(proto, payload, dst_mac=US_MAC, src=PEER_IP, dst=US_IP):
    return (dst_mac + PEER_MAC + b"\x08\x00" + ipv4_header(src, dst, proto, len(payload))
            + payload)


@pytest.mark.parametrize("frame,reason", [
    (b"\x00" * 13, "eth_short"),
    (US_MAC + PEER_MAC + b"\x86\xdd" + b"\x00" * 40, "ethertype_unsupported"),
    (syn(dst_mac=bytes.fromhex("02000000abcd")), "not_for_us"),
    (syn(dst_ip=OTHER_IP), "not_for_us"),
    (ipv4_frame(17, b"\x00" * 8), "ip_proto_unsupported"),
    (US_MAC + PEER_MAC + b"\x08\x00" + b"\x45" + b"\x00" * 10, "ip_short"),
    (syn()[:24] + b"\x00\x00" + syn()[26:], "ip_bad_checksum"),
    (ipv4_frame(6, b"\x00" * 10), "tcp_short"),
    (syn()[:-1] + bytes([syn()[-1] ^ 1]), "tcp_bad_checksum"),
    (arp_request()[:30], "arp_short"),
    (arp_request(target_ip=OTHER_IP), "arp_not_for_us"),
])
def test_named_reason(stack, frame, reason):
    stack.receive_frame(frame)
    assert stack.drops == {reason: 1}


def test_ip_fragment_and_options_are_dropped(stack):
    seg = build_tcp(PEER_IP, US_IP, 1, 80, 0, 0, SYN, 100)
    hdr = bytearray(ipv4_header(PEER_IP, US_IP, 6, len(seg)))
    hdr[6] = 0x20                                     # MF
    hdr[10:12] = b"\0\0"
    s = sum(struct.unpack("!10H", bytes(hdr)))
    s = (s & 0xFFFF) + (s >> 16)
    hdr[10:12] = struct.pack("!H", ~s & 0xFFFF)
    stack.receive_frame(US_MAC + PEER_MAC + b"\x08\x00" + bytes(hdr) + seg)
    hdr2 = bytearray(ipv4_header(PEER_IP, US_IP, 6, len(seg)))
    hdr2[0] = 0x46
    stack.receive_frame(US_MAC + PEER_MAC + b"\x08\x00" + bytes(hdr2) + b"\0" * 4 + seg)
    assert stack.drops == {"ip_fragment": 1, "ip_options": 1}


def test_ethernet_padding_is_ignored(stack, dev):
    stack.listen(80)
    stack.receive_frame(syn() + b"\x00" * 6)          # padded to the 60-byte minimum
    assert not stack.drops
    assert stack.counters["syns_received"] == 1


def test_non_bytes_frames_are_accepted(stack):
    stack.listen(80)
    stack.receive_frame(bytearray(syn()))
    stack.receive_frame(memoryview(syn(sport=40001)))
    assert stack.counters["syns_received"] == 2


def _valid_frames():
    return [syn(), tcp_frame(ACK, payload=b"data"), arp_request(),
            tcp_frame(SYN | ACK, dst_mac=BROADCAST_MAC)]


FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(frame=st.binary(max_size=200))
def test_random_frames_never_raise_and_are_accounted(stack, frame):
    stack.listen(80) if 80 not in stack.listeners else None
    before = accounted(stack)
    stack.receive_frame(frame)
    assert accounted(stack) == before + 1
    assert set(stack.drops) <= KNOWN


@FUZZ
@given(base=st.sampled_from(range(4)), data=st.data())
def test_mutated_frames_never_raise_and_are_accounted(stack, base, data):
    stack.listen(80) if 80 not in stack.listeners else None
    frame = bytearray(_valid_frames()[base])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.one_of(st.none(), st.integers(0, len(frame))))
    if cut is not None:
        frame = frame[:cut]
    before = accounted(stack)
    stack.receive_frame(bytes(frame))
    assert accounted(stack) == before + 1
    assert set(stack.drops) <= KNOWN
    assert "internal_error" not in stack.drops


@FUZZ
@given(flags=st.integers(0, 255), seq=st.integers(0, 2**32 - 1), ack=st.integers(0, 2**32 - 1),
       payload=st.binary(max_size=40), dport=st.sampled_from([80, 81]))
def test_any_well_formed_segment_is_handled(stack, flags, seq, ack, payload, dport):
    """Valid checksums, any flags/seq/ack: listener, closed port or new child."""
    stack.listen(80) if 80 not in stack.listeners else None
    before = accounted(stack)
    stack.receive_frame(tcp_frame(flags, seq=seq, ack=ack, dport=dport, payload=payload))
    assert accounted(stack) == before + 1
