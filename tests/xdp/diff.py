"""The differential harness: one frame through NicDataplane (the specification) and through
XdpDataplane (nic.bpf.c under BPF_PROG_TEST_RUN), then verdicts, bytes, counters and tables
compared.  The NicDataplane has no teardown or splice table unless a test asks for one
(``Pair(open_xdp, teardown_capacity=N, splice_capacity=N)``: both NICs get it)."""

from acceltcp.nic.dataplane import HOST, WIRE, NicDataplane
from acceltcp.wire.control import Listen, Unlisten
from acceltcp.wire.tcp import build_tcp_frame, tcp_options

SECRET = bytes(range(32))
NIC_MAC = bytes.fromhex("020000000001")
PEER_MAC = bytes.fromhex("020000000002")
HOST_MAC = bytes.fromhex("020000000003")
SRV = bytes([10, 0, 0, 1])
CLI = bytes([10, 0, 0, 2])
MASK = 0xFFFFFFFF


def norm(out):
    return [(port, bytes(f)) for port, f in out]


def per_port(out):
    """The frames each port sends, in order: a NIC's two ports are separate queues, so
    only the order within one is observable (the XDP NIC sends a reopening SYN's cookie
    SYN-ACK on the wire before its control side reports the flow's end to the host)."""
    return {port: [f for p, f in out if p == port] for port in (WIRE, HOST)}


class Pair:
    """The same NIC twice.  ``run(frame, port, now)`` -> the (equal) output, after
    asserting equality; ``check_state()`` compares counters and tables."""

    def __init__(self, open_xdp, **kw):
        kw.setdefault("secret", SECRET)
        kw.setdefault("teardown_capacity", 0)
        kw.setdefault("splice_capacity", 0)
        self.kw = kw
        # the XDP NIC has no TCP Chimney (0x090F): compare with the Python NIC without it
        self.nic = NicDataplane(NIC_MAC, chimney_capacity=0, **kw)
        self.xdp = open_xdp(NIC_MAC, **kw)
        self.frames = 0

    def reset(self):
        self.nic = NicDataplane(NIC_MAC, chimney_capacity=0, **self.kw)
        self.xdp.reset()

    def run(self, frame, port, now, csum_ok=False, state=False):
        frame = bytes(frame)
        a = norm(self.nic.process(frame, port, now, csum_ok))
        b = norm(self.xdp.process(frame, port, now, csum_ok))
        self.frames += 1
        assert per_port(b) == per_port(a), "outputs differ for %s frame %s at now=%r" % (
            "WIRE" if port == WIRE else "HOST", frame.hex(), now)
        if state:
            self.check_state()
        return a

    def check_state(self):
        x, n = self.xdp, self.nic
        assert x.counters == n.counters, {k: (x.counters.get(k), n.counters.get(k)) for k in
                                          set(x.counters) | set(n.counters)
                                          if x.counters.get(k) != n.counters.get(k)}
        xc = x.xdp_counters()
        assert xc["xdp_key_missing"] == 0 and xc["xdp_adjust_failed"] == 0
        assert x.ident == n.ident
        assert x.handed_entries() == dict(n.handed._index)
        assert x.listener_entries() == sorted(
            (lst.ip, lst.port, lst.mss, lst.wscale, lst.sack_ok, lst.timestamps,
             lst.defer_accept) for lst in n.listeners.entries())

    def listen(self, ip=SRV, port=80, mss=1460, wscale=7, sack_ok=True, timestamps=True,
               now=0.0, defer_accept=False):
        return self.run(Listen(ip, port, mss, wscale, sack_ok, timestamps, defer_accept)
                        .frame(NIC_MAC, HOST_MAC), HOST, now)

    def unlisten(self, ip=SRV, port=80, now=0.0):
        return self.run(Unlisten(ip, port).frame(NIC_MAC, HOST_MAC), HOST, now)


def syn(isn=0xFFFFFFF0, dport=80, mss=1460, wscale=7, sack=True, tsval=123456, src=CLI,
        dst=SRV, sport=40000, opts=None, payload=b""):
    if opts is None:
        opts = tcp_options(mss=mss, wscale=wscale, sack_permitted=sack,
                           timestamps=None if tsval is None else (tsval, 0))
    return build_tcp_frame(NIC_MAC, PEER_MAC, src, dst, 1, sport, dport, isn, 0, 0x02, 64240,
                           opts, payload)


def synack_fields(frame):
    """(isn, tsval) of a SYN-ACK frame the NIC built (options in tcp_options' layout)."""
    isn = int.from_bytes(frame[38:42], "big")
    i = 54
    while i < len(frame):
        if frame[i] == 1:
            i += 1
        elif frame[i] == 8:
            return isn, int.from_bytes(frame[i + 2:i + 6], "big")
        else:
            i += frame[i + 1]
    return isn, None


def ack(synack, isn=0xFFFFFFF0, tsval=123460, payload=b"", flags=0x10, sport=40000, dport=80,
        src=CLI, dst=SRV, seq=None, ackno=None, tsecr=None):
    s_isn, s_tsval = synack_fields(synack)
    return build_tcp_frame(
        NIC_MAC, PEER_MAC, src, dst, 2, sport, dport,
        (isn + 1) & MASK if seq is None else seq,
        (s_isn + 1) & MASK if ackno is None else ackno, flags, 502,
        tcp_options(timestamps=(tsval, s_tsval if tsecr is None else tsecr)), payload)


def host_segment(flags, sport=80, dport=40000, src=SRV, dst=CLI, seq=5, ackno=6,
                 payload=b"", opts=b""):
    return build_tcp_frame(PEER_MAC, NIC_MAC, src, dst, 9, sport, dport, seq, ackno, flags,
                           1000, opts, payload)


def fix_checksums(frame):
    """A copy of an Ethernet/IPv4 frame with both checksums recomputed (IHL 5 only, TCP
    over what the IP total length says); other frames unchanged."""
    f = bytearray(frame)
    if len(f) < 34 or f[12:14] != b"\x08\x00" or f[14] != 0x45:
        return bytes(f)
    total = int.from_bytes(f[16:18], "big")
    f[24:26] = b"\0\0"
    f[24:26] = _csum(f[14:34]).to_bytes(2, "big")
    if f[23] == 6 and 40 <= total <= len(f) - 14:
        seg = f[34:14 + total]
        seg[16:18] = b"\0\0"
        pseudo = bytes(f[26:34]) + b"\0\x06" + (total - 20).to_bytes(2, "big")
        f[50:52] = _csum(pseudo + bytes(seg)).to_bytes(2, "big")
    return bytes(f)


def _csum(b):
    if len(b) & 1:
        b = bytes(b) + b"\0"
    s = sum(int.from_bytes(b[i:i + 2], "big") for i in range(0, len(b), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
