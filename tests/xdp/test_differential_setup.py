"""Differential, setup offload: the corpus.  Every frame goes through nic/dataplane.py and
through nic.bpf.c (BPF_PROG_TEST_RUN); outputs must be byte-identical, and counters,
IPv4 ident, listener and handed-over tables equal (diff.Pair)."""

import itertools
import struct

import pytest

from acceltcp.nic.dataplane import HOST, WIRE
from acceltcp.nic.xdp.blake2s import cookie_state, finish, keyed_state
from acceltcp.tcp.syncookie import SynCookieJar
from acceltcp.wire.control import (
    L4Rule, NewConnection, Splice, StatusRequest, Teardown, wrap,
)
from acceltcp.wire.tcp import build_tcp_frame, tcp_options

from .diff import (
    CLI, HOST_MAC, MASK, NIC_MAC, PEER_MAC, SECRET, SRV, Pair, ack, fix_checksums,
    host_segment, syn, synack_fields,
)

T0 = 1000.25


@pytest.fixture
def pair(open_xdp):
    def make(**kw):
        return Pair(open_xdp, **kw)
    return make


# -- the hash ----------------------------------------------------------------------------

def test_keyed_state_finish_equals_hashlib():
    import hashlib
    import random
    rnd = random.Random(10)
    for _ in range(300):
        key = rnd.randbytes(rnd.randint(1, 32))
        msg = rnd.randbytes(22)
        assert finish(keyed_state(key), msg) == hashlib.blake2s(
            msg, key=key, digest_size=3, person=b"acctcpsc").digest()


def test_docstring_example_through_xdp(pair):
    """syncookie.py's worked example, bit for bit, from the XDP program."""
    p = pair(ts_offset=0)
    p.listen(wscale=7, sack_ok=True, now=T0)
    (port, sa), = p.run(syn(isn=0xFFFFFFF0, mss=1460, wscale=7, sack=True), WIRE, 100.25,
                        state=True)
    assert port == WIRE and synack_fields(sa) == (0x2677A0FD, 0x1876F)
    (port, nc), = p.run(ack(sa), WIRE, 115.999, state=True)
    assert port == HOST and nc[12:14] == b"\x09\x0a"
    assert p.run(ack(sa, sport=40000), WIRE, 116.0, state=True) == [(HOST, ack(sa))]


def test_cookie_state_is_the_jars_key():
    jar = SynCookieJar(SECRET)
    for gen in (-1, 0, 1, 1234567):
        msg = bytes(range(22))
        h = jar._derive(gen).copy()
        h.update(msg)
        assert finish(cookie_state(SECRET, gen), msg) == h.digest()


# -- SYNs --------------------------------------------------------------------------------

MSS = (None, 0, 100, 535, 536, 537, 1199, 1200, 1359, 1360, 1400, 1440, 1452, 1459, 1460,
       8959, 8960, 65535)
WS = (None, 0, 1, 7, 14, 15, 255)


def test_syn_every_option_combination(pair):
    """SYN options (MSS classes incl. < 536, WS absent/0..14/15+, SACK, TS) x listeners
    (WS offered or not, SACK, TS): 18 x 7 x 2 x 2 x 8 = 4032 SYNs."""
    p = pair()
    now = T0
    n = cookies = to_host = 0
    for lws, lsack, lts in itertools.product((None, 7), (False, True), (False, True)):
        p.reset()
        p.listen(mss=1400, wscale=lws, sack_ok=lsack, timestamps=lts, now=now)
        for mss, ws, sack, ts in itertools.product(MSS, WS, (False, True), (False, True)):
            opts = b""
            if mss is not None:
                opts += struct.pack("!BBH", 2, 4, mss)
            if ts:
                opts += (b"\x04\x02" if sack else b"\x01\x01") + \
                    struct.pack("!BBII", 8, 10, 0xFFFFFF00 + n % 256, 0)
            elif sack:
                opts += b"\x01\x01\x04\x02"
            if ws is not None:
                opts += bytes((1, 3, 3, ws))
            n += 1
            now += 0.37
            p.run(syn(isn=(n * 2654435761) & MASK, sport=1024 + n, opts=opts), WIRE, now)
        p.check_state()
        cookies += p.nic.counters["syn_cookies_sent"]
        to_host += p.nic.counters["syn_to_host"]
    assert n == 4032 and cookies == 840 and to_host == n - cookies


def test_syn_option_layouts_and_malformed_options(pair):
    p = pair()
    p.listen(now=T0)
    ts = struct.pack("!BBII", 8, 10, 77, 0)
    layouts = [
        ts + b"\x02\x04\x05\xb4\x01\x01",                        # TS first
        b"\x01" * 8 + ts + b"\x00\x00",                          # NOP run, EOL padding
        ts + b"\x00" + b"\x02\x04\x05\xb4" + b"\0" * 3,            # MSS after EOL: ignored
        b"\x02\x04\x05\xb4\x02\x04\x00\x10" + ts + b"\0\0",       # repeated MSS: last wins
        b"\x03\x03\x02\x03\x03\x0e" + ts + b"\0\0\0\0",           # repeated WS
        b"\x1e\x06abcd" + ts + b"\0\0",                          # unknown option
        b"\x05\x0a" + bytes(8) + ts + b"\0\0",                   # SACK blocks on a SYN
        b"\x05\x12" + bytes(16) + ts + b"\0\0",                  # two SACK blocks
        ts + b"\x08\x0a" + bytes(8) + b"\0\0",                   # second TS
        b"\x02\x05\x05\xb4\x00" + ts + b"\0\0\0",                 # MSS length 5
        b"\x03\x02" + ts + b"\0\0",                              # WS length 2
        b"\x04\x03\x00" + ts + b"\0\0\0",                         # SACK-perm length 3
        b"\x05\x0b" + bytes(9) + ts + b"\0",                     # SACK length 11
        b"\x05\x02" + ts + b"\0\0",                              # SACK length 2
        ts + b"\x08\x09" + bytes(7) + b"\0\0\0",                  # TS length 9
        ts + b"\x02",                                            # no length byte
        ts + b"\x02\x01",                                        # length < 2
        ts + b"\x02\x00",                                        # length 0
        ts + b"\x1e\x08\x00\x00",                                # past the header end
        b"\x01" * 36 + b"\x02\x04\x05",                           # MSS cut at the end
        bytes(40),                                               # all EOL
        b"\x01" * 40,                                            # all NOP
        b"\x01" * 28 + ts + b"\x01\x01",                          # 40 bytes, TS at the end
    ]
    for i, opts in enumerate(layouts):
        opts = opts + bytes(-len(opts) % 4)
        p.run(syn(sport=2000 + i, opts=opts[:40]), WIRE, T0 + i, state=True)


def test_syn_with_payload_and_padding(pair):
    """Longer SYNs shrink at the tail, shorter ones grow at the front: same bytes."""
    p = pair()
    p.listen(now=T0)
    ts_only = tcp_options(timestamps=(5, 0))
    for i, (opts, payload, pad) in enumerate([
            (ts_only, b"", 0), (ts_only, b"", 6), (ts_only, b"x" * 1000, 0),
            (tcp_options(timestamps=(5, 0), sack_permitted=True), b"", 0),
            (tcp_options(mss=1460, wscale=3, sack_permitted=True, timestamps=(5, 0)),
             b"GET / HTTP/1.1\r\n\r\n", 10)]):
        f = syn(sport=3000 + i, opts=opts, payload=payload) + bytes(pad)
        out = p.run(f, WIRE, T0 + i, state=True)
        assert out[0][0] == WIRE


def test_wildcard_and_exact_listeners(pair):
    p = pair()
    p.listen(ip=b"\0\0\0\0", port=80, timestamps=True, wscale=None, now=T0)
    p.listen(ip=SRV, port=80, timestamps=False, now=T0)
    p.listen(ip=b"\0\0\0\0", port=8080, sack_ok=False, wscale=3, now=T0)
    p.check_state()
    other = bytes([10, 0, 0, 9])
    assert p.run(syn(dst=SRV), WIRE, T0, state=True)[0][0] == HOST          # exact: no TS
    assert p.run(syn(dst=other), WIRE, T0, state=True)[0][0] == WIRE        # wildcard
    assert p.run(syn(dst=SRV, dport=8080), WIRE, T0, state=True)[0][0] == WIRE
    assert p.run(syn(dst=SRV, dport=81), WIRE, T0, state=True)[0][0] == HOST
    p.unlisten(ip=SRV, port=80)
    assert p.run(syn(dst=SRV), WIRE, T0, state=True)[0][0] == WIRE          # now wildcard
    p.unlisten(ip=SRV, port=80)                                             # unknown
    p.listen(ip=SRV, port=80, mss=8960, timestamps=True, now=T0)            # update in place
    p.listen(ip=SRV, port=80, mss=536, wscale=14, timestamps=True, now=T0)
    assert p.run(syn(dst=SRV), WIRE, T0, state=True)[0][0] == WIRE


def test_listener_table_full(pair):
    p = pair(listener_capacity=3)
    for port in (1, 2, 3, 4, 5):
        p.listen(port=port, now=T0)
    p.listen(port=2, mss=1200, now=T0)                   # update of a present key: fine
    p.check_state()
    assert p.nic.counters["listener_table_full"] == 2


# -- cookie ACKs ---------------------------------------------------------------------------

@pytest.mark.parametrize("rst", [False, True])
def test_cookie_acks_every_age_and_forgeries(pair, rst):
    p = pair(rst_on_bad_cookie=rst, window=16)
    p.listen(now=T0)
    n = 0
    for age in range(0, 18):
        for opts in (dict(), dict(wscale=None), dict(sack=False), dict(mss=9000),
                     dict(mss=None, wscale=14)):
            n += 1
            isn = (0xFFFFFF00 + n * 977) & MASK
            t = T0 + n * 0.01
            (_, sa), = p.run(syn(isn=isn, sport=5000 + n, **opts), WIRE, t)
            later = t + age + 0.5
            p.run(ack(sa, isn=isn, sport=5000 + n, payload=b"q" * (n % 3)), WIRE, later,
                  state=True)
            # forgeries on fresh tuples (none of them handed over)
            for kw in (dict(ackno=(synack_fields(sa)[0] + 2) & MASK),
                       dict(seq=(isn + 2) & MASK),
                       dict(tsecr=synack_fields(sa)[1] ^ 0x02),
                       dict(tsecr=synack_fields(sa)[1] ^ 0x20),
                       dict(ackno=0x12345679, tsecr=0x11111111)):
                p.run(ack(sa, isn=isn, sport=6000 + n, **kw), WIRE, t + 1, state=False)
    p.check_state()
    c = p.nic.counters
    assert c["cookie_ack_ok"] == 5 * 16 and c["cookie_ack_bad"] > 5 * 2 + 5 * 18 * 5 - 1
    assert c["rst_sent"] == (c["cookie_ack_bad"] if rst else 0)


def test_cookie_across_key_generations(pair):
    """A SYN just before a generation change, its ACK after it (the previous key)."""
    p = pair(tick=1.0, period=64.0, window=16)
    p.listen(now=0.0)
    for i, t in enumerate((63.9, 127.5, 64 * 1000 - 0.2, 0.0, 3.0)):
        (_, sa), = p.run(syn(sport=7000 + i), WIRE, t, state=True)
        for dt in (0.0, 0.3, 1.0, 15.0, 15.9, 16.0, 40.0):
            p.run(ack(sa, sport=7000 + i, tsval=99 + i), WIRE, t + dt, state=True)
            p.run(ack(sa, sport=7100 + i, tsval=99 + i), WIRE, t + dt, state=True)


def test_forged_acks_early_in_time_negative_counter(pair):
    """now = 2 s: an ISN counter of 31 rebuilds to counter -1 (generation -1)."""
    p = pair()
    p.listen(now=0.0)
    for i in range(64):
        f = build_tcp_frame(NIC_MAC, PEER_MAC, CLI, SRV, 2, 9000 + i, 80, 1,
                            ((31 - i % 32) << 27 | i << 20 | 0x777) + 1, 0x10, 100,
                            tcp_options(timestamps=(1, 0x41 + 2 * i)), b"")
        p.run(f, WIRE, 2.0 + (i % 3) * 0.4, state=True)
    for now in (-5.5, -64.0, -64.5):
        (_, sa), = p.run(syn(sport=9100), WIRE, now, state=True)
        p.run(ack(sa, sport=9100), WIRE, now + 1, state=True)


@pytest.mark.parametrize("defer", [False, True])
def test_defer_accept_bare_ack_data_fin_and_forgeries(pair, defer):
    """A defer-accept listener absorbs valid bare ACKs only: the request, a FIN, a
    retransmitted request and forgeries are judged as on any listener."""
    p = pair()
    p.listen(now=T0, defer_accept=defer)
    p.listen(port=81, now=T0)                       # never deferring, beside it
    for i, (dport, payload, flags) in enumerate([
            (80, b"", 0x10), (80, b"GET /", 0x18), (80, b"", 0x11), (81, b"", 0x10),
            (80, b"x" * 1400, 0x10), (80, b"", 0x19)]):
        sport = 12000 + i
        (_, sa), = p.run(syn(sport=sport, dport=dport), WIRE, T0 + i, state=True)
        p.run(ack(sa, sport=sport, dport=dport), WIRE, T0 + i + 0.01, state=True)
        p.run(ack(sa, sport=sport, dport=dport, payload=payload, flags=flags), WIRE,
              T0 + i + 0.02, state=True)
        p.run(ack(sa, sport=sport, dport=dport, payload=payload, flags=flags), WIRE,
              T0 + i + 0.2, state=True)                                   # retransmitted
        p.run(ack(sa, sport=sport + 100, dport=dport), WIRE, T0 + i, state=True)  # forged
    c = p.nic.counters
    assert c["cookie_ack_deferred"] == (7 if defer else 0)     # 5 handshakes + case 0's 2


# -- the handed-over table ---------------------------------------------------------------------

def test_second_segments_and_syns_on_handed_flows(pair):
    p = pair()
    p.listen(now=T0)
    (_, sa), = p.run(syn(), WIRE, T0, state=True)
    (port, f), = p.run(ack(sa, payload=b"GET /"), WIRE, T0 + 0.01, state=True)
    assert port == HOST and f[12:14] == b"\x09\x0a"
    # the second write: seq past the first, same cookie TSecr -> host as a plain segment
    assert p.run(ack(sa, seq=(0xFFFFFFF1 + 5) & MASK, payload=b" HTTP"), WIRE, T0 + 0.02,
                 state=True)[0][0] == HOST
    # a SYN on the handed tuple (spoofed): to the host, no cookie
    assert p.run(syn(), WIRE, T0 + 0.03, state=True)[0][0] == HOST
    # a retransmitted handshake ACK still verifies: 0x090A again (entry refreshed)
    assert p.run(ack(sa), WIRE, T0 + 1, state=True)[0][1][12:14] == b"\x09\x0a"
    # the host's FIN removes the entry; then a second segment is dropped again
    p.run(host_segment(0x11), HOST, T0 + 2, state=True)
    assert p.run(ack(sa, seq=(0xFFFFFFF1 + 5) & MASK, payload=b"x"), WIRE, T0 + 2,
                 state=True) == []


def test_host_synack_fin_rst_maintain_the_table(pair):
    p = pair()
    p.listen(now=T0)
    p.listen(ip=b"\0\0\0\0", port=8080, now=T0)
    for i in range(6):
        p.run(host_segment(0x12, dport=41000 + i, opts=tcp_options(mss=1460)), HOST, T0,
              state=True)
    p.run(host_segment(0x12, sport=8080, dport=42000), HOST, T0, state=True)   # wildcard
    p.run(host_segment(0x12, sport=81, dport=42001), HOST, T0, state=True)     # no listener
    p.run(host_segment(0x11, dport=41000), HOST, T0, state=True)               # FIN
    p.run(host_segment(0x04, dport=41001), HOST, T0, state=True)               # RST
    p.run(host_segment(0x14, dport=41009), HOST, T0, state=True)               # unknown
    p.run(host_segment(0x18, dport=41002, payload=b"data"), HOST, T0, state=True)
    # not looked at: IP options, fragments, not TCP
    f = bytearray(host_segment(0x12, dport=41003))
    for i, j, v in ((14, 14, 0x46), (20, 20, 0x20), (21, 21, 0x01), (23, 23, 17)):
        g = bytearray(f)
        g[i] = v
        p.run(bytes(g), HOST, T0, state=True)
    # the SYN on a host-origin entry goes up
    assert p.run(syn(sport=41002, tsval=5), WIRE, T0, state=True)[0][0] == HOST


def test_handed_capacity_zero_and_eviction_count(pair):
    p = pair(handed_capacity=0)
    p.listen(now=T0)
    (_, sa), = p.run(syn(), WIRE, T0, state=True)
    p.run(ack(sa), WIRE, T0, state=True)
    p.run(host_segment(0x12, dport=41000), HOST, T0, state=True)
    # capacity 4: the fifth flow evicts one; which one is the map's choice (the kernel's
    # LRU, the Python table's FIFO): counters must agree, the sets may not
    p = pair(handed_capacity=4)
    p.listen(now=T0)
    for i in range(4):
        p.run(host_segment(0x12, dport=43000 + i), HOST, T0, state=True)
    p.run(host_segment(0x12, dport=43000), HOST, T0, state=True)          # refresh
    p.run(host_segment(0x12, dport=43010), HOST, T0)
    assert p.xdp.counters == p.nic.counters
    assert p.nic.counters["handed_evicted"] == 1
    assert len(p.xdp.handed_entries()) == len(p.nic.handed) == 4


# -- everything else ------------------------------------------------------------------------

def _ip_frame(proto=6, payload=b"\0" * 20, vihl=0x45, frag=0x4000, total=None, csum=True,
              src=CLI, dst=SRV):
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", vihl, 0, total if total is not None
                                else 20 + len(payload), 7, frag, 64, proto, 0, src, dst))
    f = NIC_MAC + PEER_MAC + b"\x08\x00" + bytes(hdr) + payload
    return fix_checksums(f) if csum else f


def test_non_tcp_and_malformed_frames(pair):
    p = pair()
    p.listen(now=T0)
    good = syn()
    frames = [
        PEER_MAC + NIC_MAC + b"\x08\x06" + bytes(28),                    # ARP
        PEER_MAC + NIC_MAC + b"\x86\xdd" + bytes(60),                    # IPv6
        PEER_MAC + NIC_MAC + b"\x08\x00",                                # IPv4, no header
        PEER_MAC + NIC_MAC + b"\x08\x00" + bytes(19),                    # ip_short
        _ip_frame(vihl=0x65), _ip_frame(vihl=0x44), _ip_frame(vihl=0x46),
        _ip_frame(total=19), _ip_frame(total=200), _ip_frame(csum=False),
        _ip_frame(frag=0x2000), _ip_frame(frag=0x0001), _ip_frame(frag=0x8000),
        _ip_frame(proto=17), _ip_frame(proto=1, payload=b"\x08\0" + bytes(30)),
        _ip_frame(payload=b"\0\x50"), _ip_frame(payload=bytes(3)),        # TCP < 4 bytes
        _ip_frame(payload=b"\x9c\x40\x00\x50" + bytes(10)),               # TCP < 20 to a listener
        fix_checksums(good[:46] + b"\x40" + good[47:]),                   # doff 4
        fix_checksums(good[:46] + b"\xf0" + good[47:]),                   # doff past the end
        good[:50] + b"\x12\x34" + good[52:],                              # TCP checksum
        good[:-1] + bytes([good[-1] ^ 1]),                                # also
        fix_checksums(good[:36] + b"\x00\x51" + good[38:]),               # port 81: no listener
    ]
    for et in range(0x0909, 0x0910):
        frames.append(PEER_MAC + NIC_MAC + et.to_bytes(2, "big") + bytes(40))
    for i, f in enumerate(frames):
        p.run(f, WIRE, T0 + i, state=True)
    # csum_ok: the port vouches, a bad TCP checksum is not looked at
    p.run(good[:50] + b"\x12\x34" + good[52:], WIRE, T0, csum_ok=True, state=True)
    # odd-length segments (the padding byte of the checksum)
    for n in range(0, 9):
        f = build_tcp_frame(NIC_MAC, PEER_MAC, CLI, SRV, 1, 40001 + n, 80, 1, 0, 0x02, 100,
                            tcp_options(timestamps=(1, 0)), b"z" * n)
        p.run(f, WIRE, T0, state=True)
        p.run(f[:-1] + bytes([f[-1] ^ 0x80]) if n else f, WIRE, T0, state=True)
    # a large segment (checksum over > 512 bytes, every chunk size)
    for n in (511, 512, 513, 1024 + 255, 1460, 3000):
        f = build_tcp_frame(NIC_MAC, PEER_MAC, CLI, SRV, 1, 40100, 80, 1, 5, 0x18, 100,
                            tcp_options(timestamps=(1, 2)), bytes(range(256)) * 12)
        f = fix_checksums(f[:54 + 12 + n][:16] + (20 + 32 + n).to_bytes(2, "big")
                          + f[18:54 + 12 + n])
        p.run(f, WIRE, T0, state=True)
        p.run(f[:-1] + b"\x01", WIRE, T0, state=True)


def test_host_port_control_frames(pair):
    p = pair()
    seg = host_segment(0x18, payload=b"bye")
    rule = L4Rule(key=bytes(12), eth_src=NIC_MAC, eth_dst=PEER_MAC, ip_src=SRV, ip_dst=CLI,
                  sport=1, dport=2, seq_offset=0, ack_offset=0, ts_shift=0,
                  wscale_in=0, wscale_out=0)
    frames = [
        StatusRequest(7).frame(NIC_MAC, HOST_MAC),
        wrap(seg, Teardown(flow_id=3)),
        Splice(9, rule, rule).frame(NIC_MAC, HOST_MAC),
        wrap(syn(), NewConnection()),                              # NIC->host type: drop
        NIC_MAC + HOST_MAC + b"\x09\x0e" + b"\x02\x10\x00\x10" + bytes(12),   # bad version
        NIC_MAC + HOST_MAC + b"\x09\x0e" + b"\x01\x7f\x00\x10" + bytes(12),   # bad type
        NIC_MAC + HOST_MAC + b"\x09\x0e\x01",                                 # short
        NIC_MAC + HOST_MAC + b"\x09\x0d" + bytes(40),
        seg, host_segment(0x10), NIC_MAC + HOST_MAC + b"\x08\x06" + bytes(28),
    ]
    for f in frames:
        if f is not None:
            p.run(f, HOST, T0, state=True)
    p.listen(now=T0)
    p.run(StatusRequest(8).frame(NIC_MAC, HOST_MAC), HOST, T0, state=True)


def test_addresses_with_high_octets(pair):
    """Pseudo-header sums that carry out of 32 bits (addresses whose words are large in
    either byte order), wildcard listener, cookies both ways."""
    p = pair()
    p.listen(ip=b"\0\0\0\0", port=443, now=T0)
    for i, (src, dst) in enumerate([(b"\xfe\xfe\xfe\xfe", b"\xff\xff\xff\xfe"),
                                    (b"\xc0\xa8\x01\xfe", b"\x0a\x00\x00\xfa"),
                                    (b"\x01\x02\x03\xff", b"\xfe\x00\x00\xff"),
                                    (b"\xff\x00\x00\x01", b"\xff\x00\x00\x02")]):
        f = syn(src=src, dst=dst, dport=443, sport=50000 + i)
        (port, sa), = p.run(f, WIRE, T0, state=True)
        assert port == WIRE
        a = ack(sa, src=src, dst=dst, dport=443, sport=50000 + i, payload=b"x" * i)
        assert p.run(a, WIRE, T0 + 1, state=True)[0][1][12:14] == b"\x09\x0a"
        bad = bytearray(a)
        bad[-1] ^= 0x40
        p.run(bytes(bad), WIRE, T0 + 1, state=True)


def test_new_secret(pair):
    """set_secret: cookies of the old secret fail, the new ones agree with a Python NIC
    whose jar got the same secret."""
    p = pair()
    p.listen(now=T0)
    (_, old), = p.run(syn(sport=1111), WIRE, T0, state=True)
    new = bytes(range(100, 132))
    p.xdp.set_secret(new, window=8)
    p.nic.jar = SynCookieJar(new, window=8)
    assert p.run(ack(old, sport=1111), WIRE, T0 + 1, state=True) == []
    (_, sa), = p.run(syn(sport=2222), WIRE, T0 + 2, state=True)
    assert sa != old
    assert p.run(ack(sa, sport=2222), WIRE, T0 + 9.5, state=True)[0][1][12:14] == b"\x09\x0a"
    assert p.run(ack(sa, sport=2223), WIRE, T0 + 10.5, state=True) == []     # window 8


def test_port_bitmap_words(pair):
    """Ports sharing one word of atcp_lports (64..127), exact and wildcard entries on one
    port: a bit goes only with the port's last entry."""
    p = pair()
    for port in (64, 127, 128):
        p.listen(port=port, now=T0)
    p.listen(ip=b"\0\0\0\0", port=127, now=T0)
    p.unlisten(port=64)
    p.unlisten(port=127)                                  # the wildcard on 127 remains
    for i, port in enumerate((64, 127, 128, 65, 0, 65535)):
        p.run(syn(dport=port, sport=3000 + i), WIRE, T0, state=True)
    assert p.nic.counters["syn_cookies_sent"] == 2
    p.unlisten(ip=b"\0\0\0\0", port=127)
    p.run(syn(dport=127, sport=3100), WIRE, T0, state=True)
    assert p.nic.counters["syn_cookies_sent"] == 2
