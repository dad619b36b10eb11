"""The host-port channel of the process placement (io/nicchannel.py): record layout,
decoding in arbitrary pieces, garbled and oversize streams, batching over a real
socketpair (no root needed)."""

import hashlib
import os
import socket
import struct

import pytest
from hypothesis import given, settings, strategies as st

from acceltcp.io import nicchannel as nc
from acceltcp.io.nicchannel import (
    CSUM_OK, FRAME, HEADER, HELLO, HOST_TO_NIC, MAX_BODY, NIC_TO_HOST, SEGMENT, STATS,
    STATS_REQUEST, ChannelClosed, ChannelError, NicChannel, RecordDecoder, encode,
    frame_header, segment_header,
)

SMALL = HEADER + MAX_BODY       # the smallest decoder buffer allowed


def seg_body(hdr_len=66, payload=b"p" * 3000):
    return bytes(range(256))[:14] + bytes(hdr_len - 14) + payload


def test_header_layout_is_pinned():
    assert HEADER == 12
    assert frame_header(1514, csum_ok=True) == bytes.fromhex("01 01 01 00 000005ea 0000 0000")
    assert frame_header(60) == bytes.fromhex("01 01 00 00 0000003c 0000 0000")
    assert segment_header(66, 2896, 1448) == bytes.fromhex(
        "01 02 00 00 00000b92 05a8 0042")
    assert encode(STATS_REQUEST, struct.pack("!I", 7)) == bytes.fromhex(
        "01 04 00 00 00000004 0000 0000 00000007")


def test_round_trip_every_kind():
    recs = [(FRAME, CSUM_OK, 0, 0, b"\x01" * 60), (FRAME, 0, 0, 0, b"\x02" * 1514),
            (SEGMENT, 0, 1448, 66, seg_body()), (HELLO, 0, 0, 0, b'{"pid": 1}'),
            (STATS_REQUEST, 0, 0, 0, b"\0\0\0\x09"), (STATS, 0, 0, 0, b"{}"),
            (FRAME, 0, 0, 0, b"\x03" * MAX_BODY)]
    stream = b"".join(encode(k, body, flags=f, gso_size=g, hdr_len=h)
                      for k, f, g, h, body in recs)
    assert RecordDecoder(capacity=SMALL).feed(stream) == recs


@settings(max_examples=200, deadline=None)
@given(items=st.lists(st.tuples(st.binary(min_size=1, max_size=3000), st.booleans()),
                      min_size=1, max_size=30),
       cuts=st.lists(st.integers(min_value=0, max_value=100_000), max_size=40))
def test_partial_reads_give_the_same_records(items, cuts):
    stream = b"".join(frame_header(len(b), f) + b for b, f in items)
    want = [(FRAME, CSUM_OK if f else 0, 0, 0, b) for b, f in items]
    dec = RecordDecoder(NIC_TO_HOST, capacity=SMALL)
    got = []
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    for a, b in zip(points, points[1:], strict=False):
        got += dec.feed(stream[a:b])
    assert got == want
    assert dec.pending == 0


def test_a_partial_record_waits_and_the_buffer_compacts():
    dec = RecordDecoder(capacity=SMALL)
    big = b"\x07" * (MAX_BODY - 100)
    rec = frame_header(len(big)) + big
    out = []
    for _ in range(5):                     # each record forces a compaction of the tail
        out += dec.feed(rec[:HEADER + 10])
        assert dec.pending == HEADER + 10
        out += dec.feed(rec[HEADER + 10:])
    assert out == [(FRAME, 0, 0, 0, big)] * 5
    # zero-copy path: recv_into space(), commit, drain
    sp = dec.space()
    sp[:len(rec)] = rec
    dec.commit(len(rec))
    assert dec.drain() == [(FRAME, 0, 0, 0, big)]


@pytest.mark.parametrize("raw, reason", [
    (bytes.fromhex("02 01 00 00 00000010 0000 0000"), "bad_version"),
    (bytes.fromhex("01 09 00 00 00000010 0000 0000"), "bad_kind"),
    (bytes.fromhex("01 00 00 00 00000010 0000 0000"), "bad_kind"),
    (bytes.fromhex("01 01 02 00 00000010 0000 0000"), "bad_flags"),
    (bytes.fromhex("01 01 00 01 00000010 0000 0000"), "bad_flags"),
    (bytes.fromhex("01 03 01 00 00000010 0000 0000"), "bad_flags"),    # CSUM_OK on HELLO
    (bytes.fromhex("01 01 00 00 00000000 0000 0000"), "bad_length"),   # empty frame
    (bytes.fromhex("01 01 00 00 7fffffff 0000 0000"), "bad_length"),   # oversize
    (bytes.fromhex("01 01 00 00 00020001 0000 0000"), "bad_length"),   # MAX_BODY + 1
    (bytes.fromhex("01 04 00 00 00000005 0000 0000"), "bad_length"),   # request id != 4 B
    (bytes.fromhex("01 02 00 00 00000100 0000 0042"), "bad_segment"),  # gso_size 0
    (bytes.fromhex("01 02 00 00 00000100 05a8 0010"), "bad_segment"),  # header too short
    (bytes.fromhex("01 02 00 00 00000040 05a8 0042"), "bad_segment"),  # hdr_len > length
    (bytes.fromhex("01 01 00 00 00000100 05a8 0000"), "bad_segment"),  # gso on a FRAME
])
def test_garbled_headers_are_a_channel_error(raw, reason):
    dec = RecordDecoder(capacity=SMALL)
    with pytest.raises(ChannelError) as e:
        dec.feed(raw + bytes(0x100))
    assert e.value.reason == reason and reason in nc.CHANNEL_ERRORS
    # oversize is caught from the header alone, before waiting for the body
    assert dec.broken == reason
    with pytest.raises(ChannelError):       # sticky: the stream cannot resynchronise
        dec.feed(frame_header(60) + bytes(60))


def test_wrong_direction_kinds_are_refused():
    with pytest.raises(ChannelError, match="bad_kind"):
        RecordDecoder(NIC_TO_HOST, capacity=SMALL).feed(segment_header(66, 10, 1448)
                                                        + seg_body(66, b"x" * 10))
    with pytest.raises(ChannelError, match="bad_kind"):
        RecordDecoder(HOST_TO_NIC, capacity=SMALL).feed(encode(STATS, b"{}"))


def test_good_records_before_garbage_are_delivered_first():
    dec = RecordDecoder(capacity=SMALL)
    stream = frame_header(60) + b"a" * 60 + frame_header(61) + b"b" * 61 + b"\xff" * 12
    assert dec.feed(stream) == [(FRAME, 0, 0, 0, b"a" * 60), (FRAME, 0, 0, 0, b"b" * 61)]
    with pytest.raises(ChannelError, match="bad_version"):
        dec.drain()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_crash(junk):
    dec = RecordDecoder(capacity=SMALL)
    try:
        for rec in dec.feed(junk):
            assert rec[0] in nc.KINDS
    except ChannelError as e:
        assert e.reason in nc.CHANNEL_ERRORS


def test_encode_refuses_what_decode_would():
    with pytest.raises(ChannelError, match="bad_length"):
        encode(FRAME, b"")
    with pytest.raises(ChannelError, match="bad_segment"):
        encode(SEGMENT, bytes(100), gso_size=0, hdr_len=66)
    with pytest.raises(ValueError):
        RecordDecoder(capacity=MAX_BODY)


# ---------------------------------------------------------------------- over a socketpair
@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    host = NicChannel(a, accept=NIC_TO_HOST)
    nic = NicChannel(b, accept=HOST_TO_NIC)
    yield host, nic
    host.close()
    nic.close()


def _receive_all(ch, n, tries=200):
    out = []
    for _ in range(tries):
        out += ch.receive()
        if len(out) >= n or ch.eof or ch.error is not None:
            break
    return out


def test_a_batch_is_one_sendmsg_and_one_recv(pair):
    host, nic = pair
    frames = [os.urandom(60 + i) for i in range(200)]
    for i, f in enumerate(frames):
        host.queue_frame(f, csum_ok=i % 2 == 0)
    host.queue_segment(seg_body()[:66], b"s" * 3000, 1448)
    assert host.flush() is True
    assert host.stats.sends == 1 and host.stats.records_out == 201
    assert host.stats.max_send_records == 201
    got = _receive_all(nic, 201)
    assert nic.stats.recvs == 1 and nic.stats.max_recv_records == 201
    assert [r[4] for r in got[:200]] == frames
    assert [r[1] for r in got[:200]] == [CSUM_OK if i % 2 == 0 else 0 for i in range(200)]
    assert got[200] == (SEGMENT, 0, 1448, 66, seg_body()[:66] + b"s" * 3000)


def test_more_buffers_than_iov_max_still_arrive_in_order(pair):
    host, nic = pair
    n = nc.IOV_MAX + 50                     # 2 buffers per record: several sendmsg calls
    for i in range(n):
        host.queue_frame(i.to_bytes(4, "big"))
    assert host.flush()
    got = _receive_all(nic, n)
    assert [int.from_bytes(r[4], "big") for r in got] == list(range(n))
    assert host.stats.sends == -(-2 * n // nc.IOV_MAX)


def test_a_full_socket_keeps_the_rest_for_later(pair):
    host, nic = pair
    host.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    nic.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    blobs = [os.urandom(20_000) for _ in range(100)]
    digest = hashlib.sha256(b"".join(blobs)).digest()
    for b in blobs:
        assert host.queue_frame(b)
    got = []
    for _ in range(10_000):
        done = host.flush()
        got += nic.receive()
        if done and len(got) == len(blobs):
            break
    assert host.stats.send_partial > 0           # the kernel took parts of buffers
    assert host.pending_bytes == 0
    assert hashlib.sha256(b"".join(r[4] for r in got)).digest() == digest


def test_the_pending_limit_drops_like_a_full_ring(pair):
    host, _ = pair
    host.max_pending = 10_000
    assert host.queue_frame(bytes(5000))
    assert not host.queue_frame(bytes(5000))       # would exceed: refused, counted
    assert host.stats.tx_dropped == 1


def test_eof_and_errors_are_reported_not_raised(pair):
    host, nic = pair
    nic.queue_frame(b"last words")
    nic.flush()
    nic.close()
    got = _receive_all(host, 2)
    assert got == [(FRAME, 0, 0, 0, b"last words")]
    assert host.eof and host.error is None
    host.queue_frame(b"anyone?")
    with pytest.raises(ChannelClosed):
        host.flush()


def test_garbage_from_the_peer_sets_error(pair):
    host, nic = pair
    nic.sock.sendall(frame_header(3) + b"abc" + b"\x00" * 12)
    got = _receive_all(host, 2)
    assert got == [(FRAME, 0, 0, 0, b"abc")]
    assert isinstance(host.error, ChannelError) and host.error.reason == "bad_version"
    assert host.receive() == []                   # stays broken, still no exception


# ---------------------------------------------------------------------- the watchdog
def test_ping_pong_layout_and_directions():
    assert encode(nc.PING, struct.pack("!I", 3)) == bytes.fromhex(
        "01 06 00 00 00000004 0000 0000 00000003")
    assert encode(nc.PONG, struct.pack("!I", 3))[1] == 7
    assert nc.PING in HOST_TO_NIC and nc.PONG in NIC_TO_HOST
    with pytest.raises(ChannelError, match="bad_kind"):          # PING goes one way only
        RecordDecoder(NIC_TO_HOST, capacity=SMALL).feed(encode(nc.PING, bytes(4)))
    with pytest.raises(ChannelError, match="bad_length"):
        RecordDecoder(HOST_TO_NIC, capacity=SMALL).feed(
            bytes.fromhex("01 06 00 00 00000008 0000 0000") + bytes(8))


def test_heartbeat_probes_a_silent_peer_and_expires_after_the_deadline():
    hb = nc.Heartbeat(1.0, interval=0.25, now=10.0)
    assert hb.next_tick() == 10.25
    assert hb.tick(10.2) is None                      # heard recently (the start)
    assert hb.tick(10.25) is hb.PROBE and hb.probe_seq == 1 and hb.probe_at == 10.25
    assert hb.next_tick() == 11.25
    assert hb.tick(10.5) is None and hb.tick(11.24) is None   # waiting for an answer
    hb.heard(11.0)                                    # answered
    assert hb.tick(11.24) is None                     # 0.24 s since: no probe yet
    assert hb.tick(11.25) is hb.PROBE and hb.probe_seq == 2
    assert hb.tick(12.2499) is None
    assert hb.tick(12.25) is hb.EXPIRED and hb.expired
    assert hb.tick(13.0) is hb.EXPIRED and hb.next_tick() is None
    assert hb.probes == 2


def test_heartbeat_traffic_means_no_probes():
    hb = nc.Heartbeat(1.0, now=0.0)
    assert hb.interval == 0.25                        # min(deadline / 4, 0.25)
    t = 0.0
    for _ in range(1000):                             # a record every 0.2 s
        t += 0.2
        hb.heard(t)
        assert hb.tick(t + 0.1) is None
    assert hb.probes == 0
    assert nc.Heartbeat(0.4).interval == 0.1
    with pytest.raises(ValueError):
        nc.Heartbeat(0)


def test_heartbeat_a_late_owner_that_reads_first_keeps_a_live_peer():
    """The owner stalled for 10 s after probing: the answer is in its socket; reading it
    (heard) before the tick keeps the peer -- only silence *after* a probe condemns."""
    hb = nc.Heartbeat(1.0, now=0.0)
    assert hb.tick(0.25) is hb.PROBE
    hb.heard(10.25)                                   # read at 10.25, sent long before
    assert hb.tick(10.25) is None
    assert hb.tick(10.5) is hb.PROBE                  # and probed afresh


def test_take_unsent_whole_records_exactly_once(pair):
    """Give the channel up with the kernel full: what reached the peer plus what
    take_unsent returns is every record, in order, each once (at most one torn)."""
    host, nic = pair
    host.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    nic.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sent = []
    for i in range(300):
        kind = i % 3
        if kind == 0:
            body = i.to_bytes(4, "big") + os.urandom(1000 + i)
            host.queue_frame(body, csum_ok=i % 2 == 0)
            sent.append((FRAME, CSUM_OK if i % 2 == 0 else 0, 0, 0, body))
        elif kind == 1:
            hdr = bytes(range(66))
            pay = i.to_bytes(4, "big") * 700
            host.queue_segment(hdr, pay, 1448)
            sent.append((SEGMENT, 0, 1448, 66, hdr + pay))
        else:
            body = struct.pack("!I", i)
            host.queue_record(nc.PING, body)
            sent.append((nc.PING, 0, 0, 0, body))
        host.flush()
    assert host.unsent_records > 0
    recs, torn = host.take_unsent()
    assert host.unsent_records == 0 and host.pending_bytes == 0 and host.flush()
    host.close()
    got = []
    for _ in range(1000):
        got += nic.receive()
        if nic.eof:
            break
    assert got == sent[:len(got)]
    assert recs == sent[len(got) + torn:]
    assert len(got) + torn + len(recs) == len(sent)
    assert torn == (1 if nic.decoder.pending else 0)   # its head is all the peer has


def test_take_unsent_after_a_cut_between_header_and_body():
    """A partial write that ends exactly after a record's header (hand-made): that
    record is torn, the next ones whole."""
    a, b = socket.socketpair()
    ch = NicChannel(a, accept=NIC_TO_HOST)
    ch.queue_frame(b"one")
    ch.queue_frame(b"two")
    ch.queue_frame(b"three")
    # what flush would leave after the kernel took HEADER + 3 + HEADER bytes
    ch._out = ch._out[3:]
    ch._head_sent = HEADER
    ch._sizes.popleft()
    recs, torn = ch.take_unsent()
    assert torn == 1 and recs == [(FRAME, 0, 0, 0, b"three")]
    ch.close()
    b.close()
