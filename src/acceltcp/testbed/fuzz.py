"""A seeded generator of malformed and mutated Ethernet frames, aimed at a host stack
behind the NIC dataplane (tests/nic/test_fuzz_dataplane.py, tests/net/test_fuzz_net.py,
benchmarks/robust_fuzz.py).

Every frame starts valid, built with the ``wire`` codecs (no scapy: 100,000 frames must
be cheap): SYNs to listener and closed ports (Linux's option layout, none, TS only, odd
subsets), cookie ACKs (TSecr with the MARK bit; real ones when a ``cookie`` hook can
compute them), data / FIN / RST / SYN / random flags at established flows (sequence
numbers near the flow's or anywhere), UDP/ICMP, ARP, VLAN-tagged and other non-IP
EtherTypes, the offload EtherTypes 0x090A..0x090E (a forged NewConnection among them)
and frames larger than the MTU. Most are then mutated: bit flips (with and without
checksums fixed afterwards, so a flip gets past the checksum to the field it hit),
truncation at and around every layer boundary, IPv4 total length / IHL / version and TCP
data offset set wrong, bad checksums, IPv4 options, fragments, odd TCP option lists
(zero-length options, MSS/WS/SACK/TS of the wrong length, EOL in the middle, an option
running past the header), other MACs and addresses, trailing Ethernet padding.

Determinism: one ``random.Random(seed)``; the same arguments give the same frames.
``avoid_keys`` (raw 12-byte ``src ip|dst ip|sport|dport`` as in ``frame[26:38]``) are
4-tuples no frame may carry in the end (connections a test keeps for a byte-exact
check afterwards), ``avoid_sports`` the peer's source ports no frame from ``peer_ip``
may carry (a kernel client bound to a known port), ``avoid_ips`` addresses no ARP frame may claim as sender (the
neighbour entries those connections use).

Command line (inside a namespace, on the TAP's peer end)::

    python -m acceltcp.testbed.fuzz send --ifname atcp0 --count 100000 --seed 1 \\
        --stack-mac 02:a7:cc:00:00:02 --stack-ip 198.18.0.2 --peer-ip 198.18.0.1 \\
        --port 7 [--max-len 9014] [--avoid-port 40000 ...]

generates the frames first (``--count`` sendable ones: runts under 14 bytes are skipped
and counted), then sends them with an AF_PACKET socket, keeping at most ``--window``
frames ahead of the interface's ``tx_packets`` + ``tx_dropped`` counters, and prints one
JSON line: sent, send errors, the queue drops, seconds, the base and mutation kinds.
On this kernel a TAP moved into a namespace showed those counters at 0, so the pacing
does not work there: `fuzzbed.tap_fuzz` makes the TAP's queue (txqueuelen) hold the
whole fuzz and passes a window as large, and checks ``tx_dropped`` stayed 0.
"""

import collections
import random
import struct

from ..wire import control
from ..wire.arp import ARP_REPLY, ARP_REQUEST, ArpPacket
from ..wire.checksum import internet_checksum, pseudo_header_sum
from ..wire.ethernet import BROADCAST_MAC, ethernet_header
from ..wire.ipv4 import ipv4_header
from ..wire.tcp import ACK, FIN, PSH, RST, SYN, URG, build_tcp_frame, tcp_options

__all__ = ["Flow", "FrameFuzzer", "fix_checksums", "BOUNDARIES"]

#: Frame lengths at and around the layer boundaries of an Ethernet/IPv4/TCP frame.
BOUNDARIES = (0, 1, 6, 12, 13, 14, 15, 20, 24, 33, 34, 35, 37, 38, 45, 46, 47, 53, 54, 55)

_U32 = 0xFFFFFFFF
_H = struct.Struct("!H")

# Odd TCP option lists (raw bytes; padded to a multiple of 4 by the caller).
_ODD_OPTIONS = (
    b"\x02\x00",                              # MSS with length 0
    b"\x02\x01",                              # length 1
    b"\x02\x03\x05",                          # MSS of length 3
    b"\x02\x05\x05\xb4\x00",                  # MSS of length 5
    b"\x03\x02",                              # WS of length 2
    b"\x03\x04\x07\x00",                      # WS of length 4
    b"\x03\x03\xff",                          # WS shift 255
    b"\x04\x03\x00",                          # SACK-permitted of length 3
    b"\x05\x02",                              # SACK with no block
    b"\x05\x09" + bytes(7),                   # SACK of length 9
    b"\x05\x0b" + bytes(9),                   # SACK of length 11
    b"\x05\x22" + bytes(32),                  # SACK of 4 blocks
    b"\x08\x08" + bytes(6),                   # TS of length 8
    b"\x08\x0c" + bytes(10),                  # TS of length 12
    b"\x08\x0a\x00\x00\x00\x01\x00\x00\x00\x01",   # TS, TSecr with the MARK bit
    b"\x00\x02\x04\x05\xb4",                  # EOL, then an MSS (ignored)
    b"\x01\x01\x00\x08\x0a",                  # NOP NOP EOL then garbage
    b"\x01" * 7,                              # only NOPs
    b"\xfe\x28",                              # length 40: past the header end
    b"\xfe",                                  # kind without a length byte at the end
    b"\x1e\x06\x00\x00\x00\x00",              # MPTCP-like unknown option
    b"\xfd\x02",                              # experimental, empty
    b"\x0e\x03\x00",                          # alternate checksum request
)


class Flow:
    """An established flow as the peer sees it: it sends ``src_ip:sport`` ->
    ``dst_ip:dport`` with ``seq`` (= the stack's RCV.NXT) and ``ack`` (= the stack's
    SND.NXT); ``tsval``: a plausible TSval of the peer (None: no timestamps)."""

    __slots__ = ("src_ip", "dst_ip", "sport", "dport", "seq", "ack", "tsval", "tsecr")

    def __init__(self, src_ip, dst_ip, sport, dport, seq, ack, tsval=None, tsecr=0):
        self.src_ip = bytes(src_ip)
        self.dst_ip = bytes(dst_ip)
        self.sport = sport
        self.dport = dport
        self.seq = seq & _U32
        self.ack = ack & _U32
        self.tsval = tsval
        self.tsecr = tsecr

    @property
    def key(self):
        return self.src_ip + self.dst_ip + _H.pack(self.sport) + _H.pack(self.dport)


def fix_checksums(f):
    """Recompute the IPv4 header checksum and the TCP checksum of the bytearray `f` in
    place, as far as its (possibly wrong) IHL, total length and length allow; -> f."""
    n = len(f)
    if n < 34 or f[12] != 8 or f[13] != 0:
        return f
    ihl = (f[14] & 15) * 4
    if ihl >= 20 and n >= 14 + ihl:
        f[24] = f[25] = 0
        f[24:26] = _H.pack(internet_checksum(f[14:14 + ihl]))
    else:
        return f
    if f[23] != 6:
        return f
    total = (f[16] << 8) | f[17]
    end = min(14 + total, n)
    start = 14 + ihl
    if end - start < 18:
        return f
    f[start + 16] = f[start + 17] = 0
    seg = f[start:end]
    f[start + 16:start + 18] = _H.pack(
        internet_checksum(seg, pseudo_header_sum(f[26:30], f[30:34], 6, len(seg))))
    return f


class FrameFuzzer:
    """Frames for a stack at ``stack_ip``/``stack_mac`` sent by the peer at
    ``peer_ip``/``peer_mac`` (module docstring). ``ports``: the stack's listener ports;
    ``closed_ports``: ports with nothing behind them; ``flows``: `Flow` objects;
    ``cookie(src_ip, sport, dst_ip, dport, client_isn) -> (isn, tsval) | None``: makes
    real cookie ACKs possible (the simulator knows the NIC's secret); ``max_len``: the
    largest frame (an AF_PACKET socket cannot send more than the MTU + 14);
    ``mutate``: the share of frames mutated after being built."""

    def __init__(self, seed, *, stack_mac, stack_ip, peer_mac, peer_ip, ports,
                 closed_ports=(9999,), flows=(), avoid_keys=(), avoid_sports=(), avoid_ips=(),
                 cookie=None,
                 max_len=65535 + 14, mutate=0.85):
        self.rng = random.Random(seed)
        self.stack_mac = bytes(stack_mac)
        self.stack_ip = bytes(stack_ip)
        self.peer_mac = bytes(peer_mac)
        self.peer_ip = bytes(peer_ip)
        self.ports = list(ports)
        self.closed_ports = list(closed_ports)
        self.flows = list(flows)
        self.avoid_keys = frozenset(bytes(k) for k in avoid_keys)
        self.avoid_sports = frozenset(avoid_sports)
        self.avoid_ips = frozenset(bytes(i) for i in avoid_ips)
        self.cookie = cookie
        self.max_len = max_len
        self.mutate = mutate
        self.ident = 0
        self.bases = collections.Counter()
        self.mutations = collections.Counter()
        self.avoided = 0
        net = self.stack_ip[:3]
        self._subnet = [net + bytes((i,)) for i in range(1, 255)
                        if net + bytes((i,)) not in self.avoid_ips | {self.stack_ip}]
        base = [(self._syn, 18), (self._cookie_ack, 10), (self._to_listener, 6),
                (self._closed, 5), (self._arp, 5), (self._offload, 4), (self._non_ip, 5),
                (self._other_ip, 3), (self._big, 2)]
        if self.flows:
            base.append((self._flow, 30))
        self._base = [f for f, _ in base]
        self._weights = [w for _, w in base]
        self._mutators = [
            (self._m_flip, 14), (self._m_flip_fixed, 14), (self._m_truncate, 10),
            (self._m_ip_length, 8), (self._m_ihl, 4), (self._m_version, 2),
            (self._m_doff, 7), (self._m_bad_csum, 6), (self._m_ip_options, 4),
            (self._m_fragment, 4), (self._m_tcp_options, 12), (self._m_pad, 3),
            (self._m_mac, 3), (self._m_addr, 3), (self._m_proto, 2), (self._m_flags, 5),
            (self._m_overwrite, 4)]
        self._mut_f = [f for f, _ in self._mutators]
        self._mut_w = [w for _, w in self._mutators]

    # -- public ------------------------------------------------------------------

    def frames(self, n):
        """-> a list of `n` frames (bytes)."""
        return [self.frame() for _ in range(n)]

    def frame(self):
        rng = self.rng
        while True:
            fn = rng.choices(self._base, self._weights)[0]
            f = fn()
            self.bases[fn.__name__[1:]] += 1
            if rng.random() < self.mutate:
                k = 1 if rng.random() < 0.8 else rng.randint(2, 3)
                for m in rng.choices(self._mut_f, self._mut_w, k=k):
                    f = m(bytearray(f))
                    self.mutations[m.__name__[3:]] += 1
            else:
                self.mutations["none"] += 1
            if len(f) > self.max_len:
                f = f[:self.max_len]
            if len(f) >= 38 and (bytes(f[26:38]) in self.avoid_keys or (
                    ((f[34] << 8) | f[35]) in self.avoid_sports and f[26:30] == self.peer_ip)):
                self.avoided += 1
                continue
            return bytes(f)

    # -- helpers -----------------------------------------------------------------

    def _src(self):
        """A sender address: mostly the peer, else its subnet, anywhere, or a martian."""
        r = self.rng.random()
        if r < 0.6:
            return self.peer_ip
        if r < 0.8:
            return self.rng.choice(self._subnet)
        if r < 0.95:
            return self.rng.getrandbits(32).to_bytes(4, "big")
        return self.rng.choice((b"\0\0\0\0", b"\x7f\0\0\1", b"\xe0\0\0\1",
                                b"\xff\xff\xff\xff", self.stack_ip))

    def _sport(self):
        return self.rng.randint(1024, 65535)

    def _tcp(self, src_ip, sport, dport, seq, ack, flags, window=65535, options=b"",
             payload=b"", dst_mac=None, src_mac=None, dst_ip=None):
        self.ident += 1
        return build_tcp_frame(dst_mac or self.stack_mac, src_mac or self.peer_mac, src_ip,
                               dst_ip or self.stack_ip, self.ident, sport, dport, seq, ack,
                               flags, window, options, payload)

    def _payload(self, most=1400):
        rng = self.rng
        n = rng.choice((0, 0, 1, 7, 64, rng.randint(0, most)))
        return rng.randbytes(n)

    def _syn_options(self):
        rng = self.rng
        r = rng.random()
        ts = (rng.getrandbits(32), 0)
        if r < 0.5:
            return tcp_options(mss=rng.choice((1460, 1460, 536, 100, 0, 9000, 65535)),
                               wscale=rng.choice((7, 0, 14, 15)),
                               sack_permitted=rng.random() < 0.8, timestamps=ts)
        if r < 0.65:
            return b""
        if r < 0.8:
            return tcp_options(timestamps=ts)
        return tcp_options(mss=rng.choice((None, 1200, 300)),
                           wscale=rng.choice((None, 2)),
                           sack_permitted=rng.random() < 0.5,
                           timestamps=ts if rng.random() < 0.5 else None)

    # -- base frames -------------------------------------------------------------

    def _syn(self):
        rng = self.rng
        port = rng.choice(self.ports) if rng.random() < 0.85 else rng.choice(self.closed_ports)
        return self._tcp(self._src(), self._sport(), port, rng.getrandbits(32), 0, SYN,
                         rng.choice((65535, 64240, 0)), self._syn_options())

    def _cookie_ack(self):
        rng = self.rng
        src, sport, dport = self._src(), self._sport(), rng.choice(self.ports)
        cisn = rng.getrandbits(32)
        seq, ack = (cisn + 1) & _U32, rng.getrandbits(32)
        tsecr = rng.getrandbits(32) | 1
        if self.cookie is not None and rng.random() < 0.3:
            got = self.cookie(src, sport, self.stack_ip, dport, cisn)
            if got is not None:
                isn, tsecr = got
                ack = (isn + 1) & _U32
                self.bases["valid_cookie"] += 1
        flags = ACK if rng.random() < 0.8 else ACK | PSH
        payload = self._payload(200) if flags & PSH else b""
        return self._tcp(src, sport, dport, seq, ack, flags, 502,
                         tcp_options(timestamps=(rng.getrandbits(32), tsecr)), payload)

    def _to_listener(self):
        rng = self.rng
        flags = rng.choice((ACK, FIN | ACK, RST, RST | ACK, PSH | ACK, 0, FIN, URG,
                            rng.getrandbits(8)))
        opts = tcp_options(timestamps=(rng.getrandbits(32), rng.getrandbits(32))) \
            if rng.random() < 0.6 else b""
        return self._tcp(self._src(), self._sport(), rng.choice(self.ports),
                         rng.getrandbits(32), rng.getrandbits(32), flags, 1024, opts,
                         self._payload(300))

    def _closed(self):
        rng = self.rng
        return self._tcp(self._src(), self._sport(), rng.choice(self.closed_ports),
                         rng.getrandbits(32), rng.getrandbits(32), rng.getrandbits(8), 512,
                         b"", self._payload(100))

    def _flow(self):
        rng = self.rng
        fl = rng.choice(self.flows)
        near = rng.random() < 0.7
        seq = (fl.seq + rng.randint(-2000, 70000)) & _U32 if near else rng.getrandbits(32)
        ack = (fl.ack + rng.randint(-3000, 3000)) & _U32 if near else rng.getrandbits(32)
        r = rng.random()
        if r < 0.35:
            flags, payload = ACK | PSH, self._payload()
        elif r < 0.55:
            flags, payload = ACK, b""
        elif r < 0.65:
            flags, payload = FIN | ACK, self._payload(100)
        elif r < 0.69:          # rarely: an acceptable one ends a victim flow
            flags, payload = rng.choice((RST, RST | ACK)), b""
        elif r < 0.8:
            flags, payload = SYN, b""
        else:
            flags, payload = rng.getrandbits(8), self._payload(200)
        opts = b""
        if fl.tsval is not None and rng.random() < 0.8:
            tsval = (fl.tsval + rng.randint(-10, 1000)) & _U32 if near else rng.getrandbits(32)
            sack = ()
            if rng.random() < 0.2:
                left = (fl.ack + rng.randint(-5000, 5000)) & _U32
                sack = ((left, (left + rng.randint(0, 3000)) & _U32),)
            opts = tcp_options(timestamps=(tsval, fl.tsecr), sack_blocks=sack)
        return self._tcp(fl.src_ip, fl.sport, fl.dport, seq, ack, flags,
                         rng.choice((65535, 502, 0)), opts, payload)

    def _arp(self):
        rng = self.rng
        sip = rng.choice((self.rng.choice(self._subnet), b"\0\0\0\0", self.stack_ip,
                          rng.getrandbits(32).to_bytes(4, "big")))
        if sip in self.avoid_ips:
            sip = self._subnet[0]
        smac = rng.choice((rng.randbytes(6), b"\x01\x00\x5e\x00\x00\x01", BROADCAST_MAC,
                           bytes((rng.getrandbits(8) & 0xFE,)) + rng.randbytes(5)))
        tip = self.stack_ip if rng.random() < 0.7 else rng.getrandbits(32).to_bytes(4, "big")
        pkt = bytearray(ArpPacket(rng.choice((ARP_REQUEST, ARP_REPLY)), smac, sip,
                                  rng.randbytes(6), tip).build())
        r = rng.random()
        if r < 0.15:
            pkt[rng.randrange(8)] = rng.getrandbits(8)      # htype/ptype/hlen/plen/op
        elif r < 0.25:
            pkt = pkt[:rng.randrange(28)]
        dst = BROADCAST_MAC if rng.random() < 0.6 else self.stack_mac
        return ethernet_header(dst, smac, 0x0806) + bytes(pkt)

    def _offload(self):
        rng = self.rng
        et = rng.randint(0x090A, 0x090E)
        if rng.random() < 0.3:
            inner = self._tcp(self.peer_ip, self._sport(), rng.choice(self.ports),
                              rng.getrandbits(32), rng.getrandbits(32), ACK, 502,
                              tcp_options(timestamps=(1, 3)))
            return control.wrap(inner, control.NewConnection(ts_base=3))   # forged 0x090A
        body = bytes((control.VERSION, rng.getrandbits(8))) + rng.randbytes(rng.randint(0, 80))
        return ethernet_header(self.stack_mac, self.peer_mac, et) + body

    def _non_ip(self):
        rng = self.rng
        r = rng.random()
        if r < 0.35:            # 802.1Q / 802.1ad tag in front of a valid IPv4/TCP frame
            inner = self._syn() if rng.random() < 0.5 else self._to_listener()
            tpid = rng.choice((0x8100, 0x88A8, 0x9100))
            return inner[:12] + _H.pack(tpid) + _H.pack(rng.getrandbits(12)) + inner[12:]
        et = rng.choice((0x86DD, 0x88CC, 0x8035, 0x0842, 0x0000, 0x05DC, 0xFFFF,
                         rng.getrandbits(16)))
        dst = rng.choice((self.stack_mac, BROADCAST_MAC))
        return ethernet_header(dst, self.peer_mac, et) + rng.randbytes(rng.randint(0, 100))

    def _other_ip(self):
        rng = self.rng
        proto = rng.choice((1, 17, 47, 132, 0, 255))
        payload = rng.randbytes(rng.randint(0, 200))
        return ethernet_header(self.stack_mac, self.peer_mac, 0x0800) + \
            ipv4_header(self._src(), self.stack_ip, proto, len(payload), self.ident) + payload

    def _big(self):
        rng = self.rng
        room = max(0, min(self.max_len, 65535 + 14) - 14 - 20 - 32)
        n = rng.randint(min(1461, room), room) if room else 0
        fl = rng.choice(self.flows) if self.flows and rng.random() < 0.5 else None
        if fl is not None:
            return self._tcp(fl.src_ip, fl.sport, fl.dport, fl.seq, fl.ack, ACK | PSH, 65535,
                             tcp_options(timestamps=(fl.tsval or 1, fl.tsecr)),
                             rng.randbytes(n))
        return self._tcp(self._src(), self._sport(), rng.choice(self.ports),
                         rng.getrandbits(32), rng.getrandbits(32), ACK, 65535,
                         tcp_options(timestamps=(1, 1)), rng.randbytes(n))

    # -- mutations (bytearray in, bytearray out) ----------------------------------

    def _m_flip(self, f):
        rng = self.rng
        if f:
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(min(len(f), 80) if rng.random() < 0.8 else len(f))
                f[i] ^= 1 << rng.randrange(8)
        return f

    def _m_flip_fixed(self, f):
        return fix_checksums(self._m_flip(f))

    def _m_truncate(self, f):
        rng = self.rng
        r = rng.random()
        if r < 0.6:
            n = rng.choice(BOUNDARIES)
        elif r < 0.8 and len(f) > 56:                 # inside options / the payload
            n = rng.randint(55, len(f) - 1)
        else:
            n = rng.randrange(len(f) + 1)
        del f[n:]
        if rng.random() < 0.4 and len(f) >= 18:       # ... and the lengths made to agree
            f[16:18] = _H.pack(max(0, len(f) - 14))
            fix_checksums(f)
        return f

    def _m_ip_length(self, f):
        if len(f) >= 18:
            rng = self.rng
            actual = len(f) - 14
            f[16:18] = _H.pack(rng.choice((0, 19, 20, 21, 39, 40, 41, actual - 1, actual + 1,
                                           0xFFFF, rng.getrandbits(16))) & 0xFFFF)
            if rng.random() < 0.7:
                fix_checksums(f)
        return f

    def _m_ihl(self, f):
        if len(f) > 14:
            f[14] = (f[14] & 0xF0) | self.rng.randrange(16)
            if self.rng.random() < 0.7:
                fix_checksums(f)
        return f

    def _m_version(self, f):
        if len(f) > 14:
            f[14] = (self.rng.randrange(16) << 4) | (f[14] & 15)
            fix_checksums(f)
        return f

    def _m_doff(self, f):
        if len(f) > 46:
            f[46] = (self.rng.randrange(16) << 4) | (f[46] & 15)
            if self.rng.random() < 0.8:
                fix_checksums(f)
        return f

    def _m_bad_csum(self, f):
        rng = self.rng
        i = 24 if rng.random() < 0.4 else 50
        if len(f) > i + 1:
            f[i + rng.randrange(2)] ^= 1 << rng.randrange(8)
        return f

    def _m_ip_options(self, f):
        rng = self.rng
        if len(f) < 34 or f[12:14] != b"\x08\x00":
            return f
        words = rng.randint(1, 10)
        opts = rng.choice((b"\x01" * 4 * words, b"\x00" * 4 * words,
                           (b"\x07\x07\x04" + bytes(4 * words - 3)) if words >= 2 else b"\x01" * 4,
                           rng.randbytes(4 * words)))
        f[34:34] = opts
        f[14] = 0x40 | (5 + words)
        total = ((f[16] << 8) | f[17]) + 4 * words
        f[16:18] = _H.pack(total & 0xFFFF)
        return fix_checksums(f)

    def _m_fragment(self, f):
        rng = self.rng
        if len(f) >= 22:
            frag = rng.choice((0x2000, 0x2000 | rng.randint(1, 0x1FFF), rng.randint(1, 0x1FFF),
                               0x8000, 0x6000))
            f[20:22] = _H.pack(frag)
            fix_checksums(f)
        return f

    def _m_tcp_options(self, f):
        rng = self.rng
        if len(f) < 54 or f[12:14] != b"\x08\x00" or f[14] != 0x45:
            return f
        doff = (f[46] >> 4) * 4
        if doff < 20 or 34 + doff > len(f):
            return f
        parts = []
        for _ in range(rng.randint(1, 3)):
            parts.append(rng.choice(_ODD_OPTIONS) if rng.random() < 0.8
                         else rng.randbytes(rng.randint(1, 12)))
            if rng.random() < 0.3:
                parts.append(tcp_options(timestamps=(rng.getrandbits(32),
                                                     rng.getrandbits(32) | 1)))
        opts = b"".join(parts)[:40]
        opts += bytes(-len(opts) & 3)
        f[54:34 + doff] = opts
        f[46] = (((20 + len(opts)) // 4) << 4) | (f[46] & 15)
        f[16:18] = _H.pack((len(f) - 14) & 0xFFFF)
        return fix_checksums(f)

    def _m_pad(self, f):
        f += self.rng.randbytes(self.rng.randint(1, 60))      # Ethernet padding/garbage
        return f

    def _m_mac(self, f):
        if len(f) >= 6:
            rng = self.rng
            f[0:6] = rng.choice((rng.randbytes(6), b"\x01\x00\x5e\x00\x00\x16", BROADCAST_MAC,
                                 b"\x33\x33\x00\x00\x00\x01"))
        return f

    def _m_addr(self, f):
        rng = self.rng
        if len(f) >= 34:
            r = rng.random()
            if r < 0.5:
                f[30:34] = rng.choice((rng.randbytes(4), b"\xff\xff\xff\xff", self.peer_ip,
                                       self.stack_ip[:3] + b"\xff"))
            else:
                f[26:30] = rng.choice((b"\0\0\0\0", b"\x7f\0\0\1", b"\xe0\0\0\x05",
                                       self.stack_ip, rng.randbytes(4)))
            fix_checksums(f)
        return f

    def _m_proto(self, f):
        if len(f) >= 34:
            f[23] = self.rng.choice((1, 17, 0, 41, 255))
            fix_checksums(f)
        return f

    def _m_flags(self, f):
        if len(f) >= 48:
            f[47] = self.rng.getrandbits(8)
            if self.rng.random() < 0.5:
                f[46] |= 1                                   # the NS / AE bit
            fix_checksums(f)
        return f

    def _m_overwrite(self, f):
        rng = self.rng
        if len(f) > 14:
            i = rng.randrange(14, len(f))
            n = min(len(f) - i, rng.randint(1, 16))
            f[i:i + n] = rng.randbytes(n)
            if rng.random() < 0.5:
                fix_checksums(f)
        return f


# ---------------------------------------------------------------------- sending
def _read_stat(ifname, name):
    with open("/sys/class/net/%s/statistics/%s" % (ifname, name)) as f:
        return int(f.read())


def send_frames(ifname, frames, window=256, timeout=60.0):
    """Send `frames` on `ifname` with an AF_PACKET socket, keeping at most `window` of
    them queued: the queue of a TAP is emptied by its reader, whose progress shows in the
    interface's tx_packets (read by the reader) and tx_dropped (queue full) counters.
    Frames shorter than an Ethernet header cannot be sent (counted short_not_sent).
    -> dict(sent, errors, short_not_sent, unsent, tx_dropped, tx_packets, seconds)."""
    import socket
    import time

    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    tx0 = _read_stat(ifname, "tx_packets")
    drop0 = _read_stat(ifname, "tx_dropped")
    t0 = time.monotonic()
    deadline = t0 + timeout
    sent = errors = short = 0
    send = s.send
    i = 0
    n = len(frames)
    step = max(1, window // 4)
    try:
        while i < n:
            done = (_read_stat(ifname, "tx_packets") - tx0) + \
                (_read_stat(ifname, "tx_dropped") - drop0)
            room = window - (sent - done)
            if room < step:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.0002)
                continue
            for f in frames[i:i + room]:
                if len(f) < 14:
                    short += 1          # a runt: no Ethernet header, AF_PACKET refuses it
                    continue
                try:
                    send(f)
                    sent += 1
                except OSError:
                    errors += 1
            i += room
    finally:
        s.close()
    # wait (bounded) for the reader to take the last ones
    end = time.monotonic() + 5.0
    while time.monotonic() < end:
        done = (_read_stat(ifname, "tx_packets") - tx0) + \
            (_read_stat(ifname, "tx_dropped") - drop0)
        if done >= sent:
            break
        time.sleep(0.005)
    return {"sent": sent, "errors": errors, "short_not_sent": short,
            "unsent": n - i if i < n else 0,
            "tx_dropped": _read_stat(ifname, "tx_dropped") - drop0,
            "tx_packets": _read_stat(ifname, "tx_packets") - tx0,
            "seconds": round(time.monotonic() - t0, 3)}


def main(argv=None):
    import argparse
    import json
    import time

    from ..wire.ethernet import mac_from_str
    from ..wire.ipv4 import ip_from_str

    ap = argparse.ArgumentParser(prog="python -m acceltcp.testbed.fuzz")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("send", help="generate and send fuzz frames on an interface")
    p.add_argument("--ifname", required=True)
    p.add_argument("--count", type=int, default=100000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--stack-mac", required=True)
    p.add_argument("--stack-ip", required=True)
    p.add_argument("--peer-ip", required=True)
    p.add_argument("--peer-mac", default=None, help="default: the interface's own")
    p.add_argument("--port", type=int, action="append", required=True)
    p.add_argument("--closed-port", type=int, action="append", default=None)
    p.add_argument("--avoid-port", type=int, action="append", default=[],
                   help="a source port of the peer that no frame from --peer-ip may carry")
    p.add_argument("--victim-port", type=int, action="append", default=[],
                   help="a source port of the peer with a connection to the first --port"
                        " that frames may aim at (its sequence numbers are unknown)")
    p.add_argument("--max-len", type=int, default=1514)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args(argv)
    peer_mac = a.peer_mac
    if peer_mac is None:
        with open("/sys/class/net/%s/address" % a.ifname) as f:
            peer_mac = f.read().strip()
    stack_ip, peer_ip = ip_from_str(a.stack_ip), ip_from_str(a.peer_ip)
    rng = random.Random(a.seed)
    flows = [Flow(peer_ip, stack_ip, vp, a.port[0], rng.getrandbits(32), rng.getrandbits(32),
                  rng.getrandbits(31), rng.getrandbits(31) << 1) for vp in a.victim_port]
    t0 = time.monotonic()
    fz = FrameFuzzer(a.seed, flows=flows, stack_mac=mac_from_str(a.stack_mac), stack_ip=stack_ip,
                     peer_mac=mac_from_str(peer_mac), peer_ip=peer_ip, ports=a.port,
                     closed_ports=a.closed_port or [9999], avoid_sports=a.avoid_port,
                     avoid_ips=[peer_ip], max_len=a.max_len)
    frames, runts = [], 0
    while len(frames) < a.count:          # runts (< 14 bytes) cannot be sent on a link
        f = fz.frame()
        if len(f) < 14:
            runts += 1
        else:
            frames.append(f)
    gen_s = time.monotonic() - t0
    out = send_frames(a.ifname, frames, window=a.window, timeout=a.timeout)
    out.update(count=a.count, runts_skipped=runts, generate_seconds=round(gen_s, 3),
               bytes=sum(map(len, frames)), bases=dict(fz.bases),
               mutations=dict(fz.mutations), avoided=fz.avoided)
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
