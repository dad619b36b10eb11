"""Differential, splice path, generated: thousands of hypothesis-made frames on spliced
tuples through nic/dataplane.py and nic.bpf.c + splice_ctl.py, derandomized (the same
frames every run).  Each example resets one pair of NICs (capacity 6 rules: three
splices, so installs are also refused for a full table) and runs ~32 actions over a pool
of proxies whose tuples collide (duplicates): Splice installs (also with a broken rule),
frames from either endpoint of any proxy on the wire port or flushed from the host port
(seq/ack near the splice point, so FINs get acknowledged and RSTs land in and out of the
window; flags, option blocks with TS and SACK, windows, payloads drawn), mutations of
those frames (any byte outside the 4-tuple, with or without fixed checksums, truncation,
padding), clock steps and the idle sweep (idle 3 s), StatusRequests.  Outputs are compared
on every frame and timer; counters, tables and rules every few actions and at the end."""

import random
import struct
from collections import Counter

from hypothesis import HealthCheck, given, settings, strategies as st

from acceltcp.wire.control import L4Rule, StatusRequest, decode

from .diff import HOST_MAC, NIC_MAC, fix_checksums
from .splice_diff import HOST, M, WIRE, Proxy, SplicePair

EXAMPLES = 400
ACTIONS = 40
MIN_FRAMES = 12000
CAPACITY = 6
IDLE = 3.0

SEQS = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFF00, 0x100)
DELTAS = (0, 0, 0, 1, 1, 2, 5, 100, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000)
FLAGS = (0x10, 0x10, 0x18, 0x18, 0x11, 0x11, 0x19, 0x04, 0x14, 0x04, 0x02, 0x12, 0x00, 0x15)


def _seq(r):
    return r.choice(SEQS) + r.choice((0, r.randrange(1 << 32), r.randrange(64)))


def make_proxy(r):
    """Tuples from small sets: proxies share a client-side or server-side key."""
    ts = r.randrange(4) != 0
    return Proxy(
        _seq(r), _seq(r), _seq(r), _seq(r), ts=ts,
        c_ts=(r.getrandbits(32), r.getrandbits(32)), s_ts=(r.getrandbits(32), r.getrandbits(32)),
        c_ws=(r.randrange(15), r.randrange(15)), s_ws=(r.randrange(15), r.randrange(15)),
        c_wnd=r.choice((0, 1, 1000, 65535, 1 << 20, r.randrange(1 << 30))),
        s_wnd=r.choice((0, 1, 1000, 65535, 1 << 20, r.randrange(1 << 30))),
        cport=r.choice((40000, 40001, 40002)), pport=r.choice((8080, 8081)),
        pport_s=r.choice((50000, 50001, 50002, 50003)),
        client_ip=r.choice((bytes([10, 0, 0, 2]), bytes([254, 253, 252, 251]))),
        server_ip=r.choice((bytes([10, 0, 1, 3]), bytes([255, 255, 255, 250]))))


def options(r):
    k = r.randrange(9)
    if k < 3:
        return b""
    if k < 6:
        return b"\x01\x01\x08\x0a" + struct.pack("!II", r.getrandbits(32), r.getrandbits(32))
    if k == 6:                                    # TS + SACK blocks (Linux's layout)
        n = r.randint(1, 3)
        o = b"\x01\x01\x08\x0a" + r.randbytes(8) + bytes((1, 1, 5, 2 + 8 * n)) + \
            r.randbytes(8 * n)
        return o[:40]
    parts = []                                    # a generated list, maybe malformed
    for _ in range(r.randrange(6)):
        kind = r.choice(("ts", "sack", "nop", "eol", "mss", "ws", "unknown", "bad", "raw"))
        if kind == "ts":
            parts.append(b"\x08\x0a" + r.randbytes(8))
        elif kind == "sack":
            n = r.randint(1, 4)
            parts.append(bytes((5, 2 + 8 * n)) + r.randbytes(8 * n))
        elif kind == "nop":
            parts.append(b"\x01")
        elif kind == "eol":
            parts.append(b"\x00")
        elif kind == "mss":
            parts.append(b"\x02\x04" + r.randbytes(2))
        elif kind == "ws":
            parts.append(b"\x03\x03" + r.randbytes(1))
        elif kind == "unknown":
            d = r.randbytes(r.randrange(6))
            parts.append(bytes((r.randint(6, 254), 2 + len(d))) + d)
        elif kind == "bad":
            n = r.choice((0, 1, 2, 3, 9, 11, 12, 17))
            parts.append(bytes((r.choice((5, 8)), n)) + r.randbytes(max(n - 2, 0)))
        else:
            parts.append(r.randbytes(r.randint(1, 4)))
    o = b"".join(parts)[:40]
    return o + bytes(-len(o) % 4)


class Run:
    def __init__(self, p, data, seen):
        self.p = p
        self.d = data
        self.seen = seen
        r = random.Random(data.draw(st.integers(0, 2**64)))
        self.now = r.choice((0.0, 1000.25, r.uniform(0, 1e6)))
        self.pool = [make_proxy(r) for _ in range(r.randint(2, 7))]
        self.recent = []           # proxies in install order (frames favour them)
        self.history = []
        self.sid = 0

    def out(self, frames):
        for port, f in frames:
            if port == HOST and f[12:14] == b"\x09\x0d":
                self.seen["end_%d" % decode(f).reason] += 1

    def proxy(self, r):
        if self.recent and r.randrange(5):
            return self.recent[-1 - min(r.randrange(3), len(self.recent) - 1)]
        return r.choice(self.pool)

    def frame(self, r):
        px = self.proxy(r)
        make = px.from_client if r.getrandbits(1) else px.from_server
        flags = r.choice(FLAGS) if r.randrange(10) else r.randrange(256)
        plen = r.choice((0, 0, 0, 1, 7, r.randrange(200)))
        return make(r.choice(DELTAS) if r.randrange(4) else r.getrandbits(32),
                    r.choice(DELTAS) if r.randrange(4) else r.getrandbits(32),
                    flags, r.randbytes(plen), r.choice((0, 1, 100, 1000, 0xFFFF,
                                                        r.randrange(65536))),
                    options=options(r), ident=r.randrange(65536))

    def mutate(self, r, f):
        b = bytearray(f)
        k = r.randrange(6)
        if k == 0:
            return bytes(b[:r.randint(14, len(b))])
        if k == 1:
            return bytes(b) + r.randbytes(r.randint(1, 30))
        for _ in range(r.randint(1, 3)):
            i = r.choice([j for j in range(12, len(b)) if not 26 <= j < 38])
            b[i] = r.randrange(256) if r.getrandbits(1) else b[i] ^ (1 << r.randrange(8))
        return fix_checksums(bytes(b)) if k < 4 else bytes(b)

    def step(self):
        r = random.Random(self.d.draw(st.integers(0, 2**64)))
        p = self.p
        a = r.choices(("install", "frame", "finish", "mutate", "advance", "status"),
                      (10, 30, 3, 6, 3, 1))[0]
        if a == "install":
            px = r.choice(self.pool)
            self.sid += 1
            ra, rb = px.rule_a, px.rule_b
            if r.randrange(6) == 0:                   # a broken pair
                rb = L4Rule.from_rule(rb)
                if r.getrandbits(1):
                    rb.ack_offset = (rb.ack_offset + 1) & M
                else:
                    rb.dport ^= 1
            self.out(p.run(px.splice(self.sid, ra, rb), HOST, self.now))
            self.recent.append(px)
        elif a == "finish":
            # both FINs and their ACKs, at drawn offsets (some do not cover the FIN)
            px = self.proxy(r)
            one, two = (px.from_client, px.from_server)[::r.choice((1, -1))]
            d1, d2 = r.choice(DELTAS[:8]), r.choice(DELTAS[:8])
            n1, n2 = r.choice((0, 0, 3, 50)), r.choice((0, 0, 9))
            port = HOST if r.randrange(6) == 0 else WIRE
            for f in (one(d1, d2, 0x11 | r.choice((0, 8)), r.randbytes(n1), 500,
                          options=options(r)),
                      two(d2, d1 + n1 + r.choice((1, 1, 1, 0, 2)), 0x11, r.randbytes(n2), 500,
                          options=options(r)),
                      one(d1 + n1 + 1, d2 + n2 + r.choice((1, 1, 1, 0)), 0x10, b"", 500,
                          options=options(r))):
                self.out(p.run(f, port, self.now))
        elif a == "frame":
            f = self.frame(r)
            self.history.append(f)
            self.out(p.run(f, HOST if r.randrange(5) == 0 else WIRE, self.now))
        elif a == "mutate" and self.history:
            f = self.mutate(r, r.choice(self.history))
            self.out(p.run(f, HOST if r.randrange(3) == 0 else WIRE, self.now))
        elif a == "advance":
            self.now += r.choice((0.001, 0.5, 1.0, 2.9, 3.0, 3.5, 10.0))
            d = p.nic.next_deadline()
            if d is not None and d <= self.now:
                self.out(p.timer(self.now))
        elif a == "status":
            p.run(StatusRequest(r.randrange(100)).frame(NIC_MAC, HOST_MAC), HOST, self.now)


def test_generated_splice_frames_agree(open_xdp):
    p = SplicePair(open_xdp, splice_capacity=CAPACITY, splice_idle=IDLE, listener_capacity=4)
    seen = Counter()

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data):
        p.reset()
        r = Run(p, data, seen)
        for i in range(ACTIONS):
            r.step()
            if i % 8 == 7:
                p.check_state()
        p.check_state()
        seen.update(p.nic.counters)

    run()
    print("generated splice frames compared: %d, %s" % (p.frames, sorted(seen.items())))
    assert p.frames >= MIN_FRAMES, "only %d frames" % p.frames
    # every outcome of the splice path occurred
    for name in ("splices_installed", "splice_frames", "splice_flushed", "splices_closed",
                 "refused_splice_full", "refused_splice_dup", "refused_splice_bad",
                 "drop_splice_untranslatable", "end_1", "end_2", "end_3", "end_4"):
        assert seen[name] > 0, "%s: %s" % (name, sorted(seen.items()))
    assert seen["splice_frames"] >= 4000

