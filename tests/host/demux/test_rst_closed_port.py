"""RST for segments that reach no connection (RFC 9293 §3.10.7.1, §3.10.7.2)."""

from acceltcp.wire.tcp import ACK, FIN, PSH, RST

from ..util import PEER_IP, PEER_MAC, US_MAC, syn, tcp_frame, tcp_sent


def test_syn_to_closed_port_gets_rst_ack_with_seq_zero(stack, dev):
    stack.receive_frame(syn(seq=5000, sport=40001, dport=81))
    [s] = tcp_sent(dev)
    assert s.tcp.flags == RST | ACK
    assert s.tcp.seq == 0 and s.tcp.ack == 5001          # SEG.SEQ + SEG.LEN (SYN counts)
    assert (s.tcp.src_port, s.tcp.dst_port) == (81, 40001)
    assert s.ip.dst == PEER_IP and s.eth_dst == PEER_MAC and s.eth_src == US_MAC
    assert s.tcp.window == 0
    assert stack.drops["no_connection"] == 1


def test_ack_is_seq_plus_len_plus_fin_and_wraps(stack, dev):
    stack.receive_frame(tcp_frame(FIN | PSH, seq=2**32 - 3, payload=b"hello"))
    [s] = tcp_sent(dev)
    assert s.tcp.flags == RST | ACK
    assert s.tcp.ack == (2**32 - 3 + 5 + 1) % 2**32


def test_ack_bearing_segment_gets_rst_with_seq_of_its_ack(stack, dev):
    stack.receive_frame(tcp_frame(ACK | PSH, seq=7, ack=123456, payload=b"x"))
    [s] = tcp_sent(dev)
    assert s.tcp.flags == RST
    assert s.tcp.seq == 123456


def test_rst_is_never_answered(stack, dev):
    stack.receive_frame(tcp_frame(RST, seq=9))
    stack.receive_frame(tcp_frame(RST | ACK, seq=9, ack=10))
    assert dev.sent == []
    assert stack.drops["rst_no_connection"] == 2


def test_ack_to_a_listener_gets_rst(stack, dev):
    stack.listen(80)
    stack.receive_frame(tcp_frame(ACK, seq=1, ack=999))
    [s] = tcp_sent(dev)
    assert s.tcp.flags == RST and s.tcp.seq == 999
    assert stack.drops["no_connection"] == 1


def test_no_syn_no_ack_to_a_listener_is_dropped_silently(stack, dev):
    stack.listen(80)
    stack.receive_frame(tcp_frame(PSH, payload=b"hi"))
    assert dev.sent == []
    assert stack.drops["listen_no_syn"] == 1


def test_martian_source_gets_no_rst(stack, dev):
    for src in (b"\xe0\x00\x00\x01", b"\x00\x00\x00\x00", b"\xc6\x12\x01\xff",
                b"\xc6\x12\x01\x01"):
        stack.receive_frame(syn(src_ip=src))
    assert dev.sent == []
    assert stack.drops["bad_src_addr"] == 4


def test_rst_counter(stack, dev):
    stack.receive_frame(syn())
    assert stack.counters["rsts_sent"] == 1
