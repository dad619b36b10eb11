"""ARP (RFC 826): answering, learning, resolving with retries, expiry, static entries."""

import pytest

from acceltcp.wire.arp import ARP_REPLY, ARP_REQUEST
from acceltcp.wire.ethernet import BROADCAST_MAC, ZERO_MAC
from acceltcp.wire.ipv4 import ip_from_str
from acceltcp.wire.tcp import SYN

from ..util import (OTHER_IP, OTHER_MAC, PEER_IP, PEER_MAC, US_IP, US_MAC, arp_reply,
                    arp_request, decode)


def arp_sent(dev):
    return [s.arp for s in decode(dev.take()) if s.arp is not None]


def test_answers_a_request_for_our_address_with_a_unicast_reply(stack, dev):
    stack.receive_frame(arp_request())
    [s] = decode(dev.take())
    assert s.eth_dst == PEER_MAC and s.eth_src == US_MAC
    assert s.arp.op == ARP_REPLY
    assert (s.arp.sender_mac, s.arp.sender_ip) == (US_MAC, US_IP)
    assert (s.arp.target_mac, s.arp.target_ip) == (PEER_MAC, PEER_IP)


def test_learns_the_requester_when_we_are_the_target(stack):
    stack.receive_frame(arp_request())
    assert stack.arp_lookup(PEER_IP) == PEER_MAC


def test_a_request_for_another_address_is_not_answered_nor_learned(stack, dev):
    stack.receive_frame(arp_request(target_ip=OTHER_IP))
    assert dev.sent == []
    assert stack.arp_lookup(PEER_IP) is None
    assert stack.drops["arp_not_for_us"] == 1


def test_an_existing_entry_is_updated_by_any_arp_rfc826_merge(stack):
    stack.receive_frame(arp_request())
    new_mac = bytes.fromhex("02000000beef")
    stack.receive_frame(arp_request(sender_mac=new_mac, target_ip=OTHER_IP))
    assert stack.arp_lookup(PEER_IP) == new_mac


def test_static_entries_are_used_and_never_overwritten(stack, dev):
    stack.arp_add(PEER_IP, PEER_MAC)
    stack.receive_frame(arp_reply(sender_mac=OTHER_MAC))
    assert stack.arp_lookup(PEER_IP) == PEER_MAC
    dev.take()
    stack.connect(PEER_IP, 80)
    [s] = decode(dev.take())
    assert s.tcp is not None and s.tcp.flags == SYN and s.eth_dst == PEER_MAC


def test_multicast_sender_mac_is_dropped(stack):
    stack.receive_frame(arp_request(sender_mac=b"\x01\x00\x5e\x00\x00\x01"))
    assert stack.drops["arp_bad_sender"] == 1
    assert stack.arp_lookup(PEER_IP) is None


def test_connect_resolves_then_flushes_the_queued_syn(stack, dev):
    stack.connect(PEER_IP, 80)
    [req] = arp_sent(dev)
    assert req.op == ARP_REQUEST and req.target_ip == PEER_IP and req.target_mac == ZERO_MAC
    stack.receive_frame(arp_reply())
    [s] = decode(dev.take())
    assert s.eth_dst == PEER_MAC and s.tcp.flags == SYN


def test_requests_go_to_broadcast(stack, dev):
    stack.connect(PEER_IP, 80)
    [s] = decode(dev.take())
    assert s.eth_dst == BROADCAST_MAC


def test_resolution_retries_every_second_three_times_then_drops(stack, dev, clock):
    stack.connect(PEER_IP, 80)
    assert len(arp_sent(dev)) == 1
    for _ in range(2):
        clock.advance(1.0)
        stack.on_timer()
        assert len(arp_sent(dev)) == 1
    clock.advance(1.0)
    stack.on_timer()
    assert arp_sent(dev) == []
    # the SYN and its retransmissions at +1 s and +3 s were queued, then dropped
    assert stack.drops["arp_unresolved"] == 3
    assert stack.counters["arp_requests_sent"] == 3


def test_a_tcb_retransmission_after_failure_restarts_resolution(stack, dev, clock):
    stack.connect(PEER_IP, 80)
    for _ in range(3):
        clock.advance(1.0)
        stack.on_timer()
    dev.take()
    clock.now = 100.0 + 7.0   # the SYN's third transmission (RTO 1, 2, 4 s)
    stack.on_timer()
    assert len(arp_sent(dev)) == 1


def test_pending_queue_is_bounded_oldest_dropped(stack, dev):
    for port in range(1000, 1040):
        stack.connect(PEER_IP, port)
    assert stack.drops["arp_queue_overflow"] == 40 - 16
    dev.take()
    stack.receive_frame(arp_reply())
    flushed = decode(dev.take())
    assert len(flushed) == 16
    assert [s.tcp.dst_port for s in flushed] == list(range(1024, 1040))


def test_unused_entry_expires_silently(make_stack, dev, clock):
    stack = make_stack(arp_timeout=5.0)
    stack.receive_frame(arp_request())
    dev.take()
    clock.advance(5.0)
    stack.on_timer()
    assert stack.arp_lookup(PEER_IP) is None
    assert arp_sent(dev) == []


def test_used_entry_is_reprobed_by_unicast_at_expiry(make_stack, dev, clock):
    stack = make_stack(arp_timeout=5.0)
    stack.receive_frame(arp_request())
    stack.connect(PEER_IP, 80)
    dev.take()
    clock.advance(5.0)
    stack.on_timer()
    [probe] = [s for s in decode(dev.take()) if s.arp]
    assert probe.eth_dst == PEER_MAC and probe.arp.target_ip == PEER_IP
    assert stack.arp_lookup(PEER_IP) == PEER_MAC      # still usable while probing
    stack.receive_frame(arp_reply())
    assert stack.arp_table()["198.18.1.2"][1] == pytest.approx(5.0)


def test_used_entry_that_stops_answering_is_removed(make_stack, dev, clock):
    stack = make_stack(arp_timeout=5.0)
    stack.receive_frame(arp_request())
    stack.connect(PEER_IP, 80)
    clock.advance(5.0)
    stack.on_timer()
    for _ in range(3):
        clock.advance(1.0)
        stack.on_timer()
    assert stack.arp_lookup(PEER_IP) is None
    assert stack.counters["arp_failures"] == 1


def test_refresh_by_traffic_extends_the_entry(make_stack, clock):
    stack = make_stack(arp_timeout=5.0)
    stack.receive_frame(arp_request())
    clock.advance(4.0)
    stack.receive_frame(arp_request())
    clock.advance(4.0)
    stack.on_timer()
    assert stack.arp_lookup(PEER_IP) == PEER_MAC


def test_off_subnet_destinations_resolve_the_gateway(make_stack, dev):
    gw = ip_from_str("198.18.1.254")
    stack = make_stack(gateway=gw)
    stack.connect("192.0.2.7", 80)
    [req] = arp_sent(dev)
    assert req.target_ip == gw


def test_off_subnet_without_gateway_is_unreachable(stack):
    with pytest.raises(OSError) as ei:
        stack.connect("192.0.2.7", 80)
    assert ei.value.errno == 101        # ENETUNREACH
