"""Helpers for host/ tests: a recording frame device, a hand-cranked clock, frame
builders for a fake peer, parsers for what the stack sent, and a fake TCB."""

from acceltcp.wire.arp import ARP_REPLY, ARP_REQUEST, ArpPacket, parse_arp
from acceltcp.wire.ethernet import (BROADCAST_MAC, ETHERTYPE_ARP, ZERO_MAC, ethernet_header,
                                    parse_ethernet)
from acceltcp.wire.ipv4 import ip_from_str, parse_ipv4
from acceltcp.wire.tcp import SYN, build_tcp_frame, parse_tcp

US_IP = ip_from_str("198.18.1.1")
PEER_IP = ip_from_str("198.18.1.2")
OTHER_IP = ip_from_str("198.18.1.3")
US_MAC = bytes.fromhex("020000000001")
PEER_MAC = bytes.fromhex("020000000002")
OTHER_MAC = bytes.fromhex("020000000003")
NEAR_WRAP = (1 << 32) - 5000             # ISNs within 10 kB of 2^32


class Clock:
    def __init__(self, now=0.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, dt):
        self.now += dt


class FakeDevice:
    """A frame device that records what the stack sends."""

    def __init__(self, mac=US_MAC):
        self.mac = mac
        self.sent = []
        self.receiver = None

    def send(self, frame):
        self.sent.append(bytes(frame))
        return True

    def set_receiver(self, cb):
        self.receiver = cb

    def take(self):
        out, self.sent = self.sent, []
        return out


def tcp_frame(flags, seq=1000, ack=0, sport=40000, dport=80, payload=b"", window=65535,
              src_ip=PEER_IP, dst_ip=US_IP, src_mac=PEER_MAC, dst_mac=US_MAC, options=b""):
    return build_tcp_frame(dst_mac, src_mac, src_ip, dst_ip, 1, sport, dport, seq, ack, flags,
                           window, options, payload)


def syn(sport=40000, dport=80, seq=NEAR_WRAP, **kw):
    return tcp_frame(SYN, seq=seq, sport=sport, dport=dport, **kw)


def arp_frame(op, sender_ip=PEER_IP, sender_mac=PEER_MAC, target_ip=US_IP, target_mac=None,
              eth_dst=None):
    if target_mac is None:
        target_mac = ZERO_MAC if op == ARP_REQUEST else US_MAC
    if eth_dst is None:
        eth_dst = BROADCAST_MAC if op == ARP_REQUEST else US_MAC
    pkt = ArpPacket(op, sender_mac, sender_ip, target_mac, target_ip).build()
    return ethernet_header(eth_dst, sender_mac, ETHERTYPE_ARP) + pkt


def arp_request(**kw):
    return arp_frame(ARP_REQUEST, **kw)


def arp_reply(**kw):
    return arp_frame(ARP_REPLY, **kw)


class Sent:
    """A frame the stack sent, decoded."""

    def __init__(self, frame):
        self.frame = frame
        self.eth_dst, self.eth_src, self.ethertype = parse_ethernet(frame)
        self.arp = self.ip = self.tcp = None
        if self.ethertype == ETHERTYPE_ARP:
            self.arp = parse_arp(frame[14:])
        else:
            self.ip = parse_ipv4(frame[14:])
            self.tcp = parse_tcp(frame[34:14 + self.ip.total_length], self.ip.src, self.ip.dst)

    def __repr__(self):
        return "Sent(%r)" % (self.arp or self.tcp,)


def decode(frames):
    return [Sent(f) for f in frames]


def tcp_sent(dev):
    return [s for s in decode(dev.take()) if s.tcp is not None]


class FakeTcb:
    """Just enough of TcpConnection's contract for demux/timer/epoll plumbing tests."""

    instances = []

    def __init__(self, config, local_ip, local_port, remote_ip, remote_port, iss, output, now):
        self.config = config
        self.local_ip, self.local_port = local_ip, local_port
        self.remote_ip, self.remote_port = remote_ip, remote_port
        self.iss = iss
        self.output = output
        self.on_event = None
        self.owner = self.key = None
        self.state = 0
        self.error = None
        self.closed = False
        self.readable = self.writable = self.eof = False
        self.deadline = None
        self.timer_calls = []
        self.segments = []
        self.rcv_nxt = 0
        self.rcvbuf = bytearray()
        self.fin_rcvd = self.fin_queued = False
        self.stats = {"retransmits": 0}
        self.retransmits = 0
        FakeTcb.instances.append(self)

    def connect(self, now):
        self.state = 2

    def accept_syn(self, seg, now):
        self.state = 3

    def on_segment(self, seg, now):
        self.segments.append(seg)

    def next_deadline(self):
        return self.deadline

    def on_timer(self, now):
        self.timer_calls.append(now)
        if self.deadline is not None and now >= self.deadline:
            self.deadline = None

    def send(self, data, now):
        return len(data)

    def recv(self, n, now=None):
        return b""

    def shutdown(self, now):
        pass

    def close(self, now):
        self.finish()

    def abort(self, now):
        self.finish()

    def finish(self, error=None):
        self.state = 0
        self.error = error
        self.closed = True
        self.deadline = None
        if self.on_event:
            self.on_event(self)

    def event(self):
        self.on_event(self)
