"""Differential, generated: at least 10,000 hypothesis-made frames per run through
nic/dataplane.py and nic.bpf.c, derandomized (the same frames on every run, so CI is
stable).  Each example is a fresh pair of NICs and a sequence of ~26 actions on a small
address space, so that handshakes complete, tuples collide with handed-over flows and
listeners come and go: Listen/Unlisten, SYNs with generated option lists, ACKs of the
SYN-ACKs seen so far (valid, shifted, with flipped TSecr bits, late), random segments,
host segments (SYN-ACK, FIN, RST, data), mutations of earlier frames (with and without
fixed checksums), random bytes, and clock steps across tick and key-generation
boundaries.  Outputs are compared on every frame, counters and tables after each
example."""

import random
import struct
from collections import Counter

from hypothesis import HealthCheck, given, settings, strategies as st

from acceltcp.nic.dataplane import HOST, WIRE
from acceltcp.wire.control import Listen, StatusRequest, Unlisten
from acceltcp.wire.tcp import build_tcp_frame

from .diff import HOST_MAC, MASK, NIC_MAC, PEER_MAC, Pair, fix_checksums

EXAMPLES = 400
ACTIONS = 26      # frames per example
MIN_FRAMES = 10_000

# high octets too: pseudo-header sums that carry out of 32 bits
CLIENTS = (bytes([10, 0, 0, 2]), bytes([10, 0, 0, 3]), bytes([254, 253, 252, 251]))
LOCALS = (bytes([10, 0, 0, 1]), bytes([10, 0, 0, 9]), bytes([255, 255, 255, 250]))
LISTEN_IPS = (bytes([10, 0, 0, 1]), bytes(4), bytes([10, 0, 0, 9]))
PORTS = (80, 8080, 443)
CPORTS = (40000, 40001, 40002, 65535)

def option(r):
    kind = r.choice(("mss", "ws", "sackp", "ts", "ts", "ts", "nop", "eol", "sack", "unknown",
                     "raw", "badlen"))
    if kind == "mss":
        return struct.pack("!BBH", 2, 4, r.choice(
            (0, 535, 536, 1200, 1400, 1452, 1460, 8960, 65535, r.randrange(65536))))
    if kind == "ws":
        return bytes((3, 3, r.choice((r.randrange(17), 255))))
    if kind == "sackp":
        return b"\x04\x02"
    if kind == "ts":
        return struct.pack("!BBII", 8, 10, r.getrandbits(32), r.getrandbits(32))
    if kind == "nop":
        return b"\x01"
    if kind == "eol":
        return b"\x00"
    if kind == "sack":
        n = r.randint(1, 3)
        return bytes((5, 2 + 8 * n)) + r.randbytes(8 * n)
    if kind == "unknown":
        data = r.randbytes(r.randrange(7))
        return bytes((r.randint(6, 254), 2 + len(data))) + data
    if kind == "badlen":                                # a known kind, a wrong length
        k = r.choice((2, 3, 4, 5, 8))
        n = r.choice((2, 3, 4, 5, 9, 10, 11, 12))
        return bytes((k, n)) + r.randbytes(n - 2)
    return r.randbytes(r.randint(1, 4))                 # anything, maybe malformed


def options(r):
    """An option block: Linux's SYN layout often, else a generated list."""
    if r.randrange(4) == 0:
        opts = (struct.pack("!BBH", 2, 4, r.choice((1460, 1400, 536, 9000)))
                + (b"\x04\x02" if r.getrandbits(1) else b"\x01\x01")
                + struct.pack("!BBII", 8, 10, r.getrandbits(32), 0)
                + bytes((1, 3, 3, r.randrange(15))))
    else:
        opts = b"".join(option(r) for _ in range(r.randrange(7)))
    opts = opts[:40]
    return opts + bytes(-len(opts) % 4)


def _tcp(r, src, dst, sport, dport, seq, ack, flags, opts, payload=b""):
    return build_tcp_frame(NIC_MAC, PEER_MAC, src, dst, r.randrange(65536), sport, dport, seq,
                           ack, flags, r.randrange(65536), opts, payload)


ACTS = ("syn", "ack", "segment", "host", "mutate", "random", "advance", "listen", "unlisten",
        "status")
WEIGHTS = (24, 24, 8, 12, 12, 5, 6, 4, 2, 1)


class Run:
    """One example: hypothesis draws a seed per action (its draws are the expensive part),
    the seed chooses the action (weighted) and its details."""

    def __init__(self, pair, data):
        self.p = pair
        self.d = data
        r = random.Random(data.draw(st.integers(0, 2**64)))
        self.now = r.choice((r.uniform(0, 1e7), 0.0, 63.5, 64 * 7 - 0.01, 30.0))
        self.synacks = []          # (frame, client ip, local ip, cport, lport, client isn)
        self.history = []
        self.sent = 0

    def prelude(self):
        """1..6 Listens first (capacity 4: some are refused)."""
        r = random.Random(self.d.draw(st.integers(0, 2**64)))
        for _ in range(r.randint(1, 6)):
            msg = Listen(r.choice(LISTEN_IPS), r.choice(PORTS), r.choice((1460, 536, 9000)),
                         r.choice((None, 7, 14)), bool(r.getrandbits(1)), r.randrange(5) != 0,
                         r.randrange(3) == 0)
            self.send(msg.frame(NIC_MAC, HOST_MAC), HOST, r)

    def send(self, frame, port, r):
        csum_ok = r.randrange(8) == 0
        out = self.p.run(frame, port, self.now, csum_ok)
        self.sent += 1
        self.history.append((frame, port))
        for oport, f in out:
            if oport == WIRE and len(f) >= 54 and f[47] == 0x12:
                self.synacks.append((f, f[30:34], f[26:30], int.from_bytes(f[36:38], "big"),
                                     int.from_bytes(f[34:36], "big"),
                                     (int.from_bytes(f[42:46], "big") - 1) & MASK))

    def step(self):
        r = random.Random(self.d.draw(st.integers(0, 2**64)))
        act = r.choices(ACTS, WEIGHTS)[0]
        if act == "listen":
            msg = Listen(r.choice(LISTEN_IPS), r.choice(PORTS),
                         r.choice((1460, 536, 9000, r.randrange(65536))),
                         r.choice((None, r.randrange(15))), bool(r.getrandbits(1)),
                         r.randrange(4) != 0, r.randrange(3) == 0)
            self.send(msg.frame(NIC_MAC, HOST_MAC), HOST, r)
        elif act == "unlisten":
            msg = Unlisten(r.choice(LISTEN_IPS), r.choice(PORTS))
            self.send(msg.frame(NIC_MAC, HOST_MAC), HOST, r)
        elif act == "status":
            self.send(StatusRequest(r.randrange(10)).frame(NIC_MAC, HOST_MAC), HOST, r)
        elif act == "syn":
            flags = 0x02 if r.randrange(6) else r.randrange(256)
            payload = b"" if r.randrange(5) else r.randbytes(r.randrange(41))
            f = _tcp(r, r.choice(CLIENTS), r.choice(LOCALS), r.choice(CPORTS),
                     r.choice(PORTS + (22,)), r.getrandbits(32), 0, flags, options(r), payload)
            self.send(f + bytes(r.choice((0, 0, 0, 6))), WIRE, r)
        elif act == "ack" and self.synacks:
            sa, cip, lip, cport, lport, cisn = r.choice(self.synacks)
            tsval = 0
            i = 54
            while i + 10 <= len(sa):
                if sa[i] == 8:
                    tsval = int.from_bytes(sa[i + 2:i + 6], "big")
                    break
                i += 1 if sa[i] == 1 else max(sa[i + 1], 1)
            # half of them the client's own ACK (bare, with data or a FIN: cookie_ack_ok,
            # _deferred, the handed-over table), the others shifted, flipped or late
            good = r.getrandbits(1)
            seq = (cisn + 1 + (0 if good else r.choice((0, 0, 0, 1, 5, -1, 1 << 31)))) & MASK
            ack = (int.from_bytes(sa[38:42], "big") + 1
                   + (0 if good else r.choice((0, 0, 0, 0, 1, 1 << 24, 1 << 27)))) & MASK
            tsecr = tsval ^ (0 if good else r.choice((0, 0, 0, 0, 1, 2, 0x20, 0x40, 1 << 31)))
            flags = r.choice((0x10, 0x18, 0x11) if good else
                             (0x10, 0x10, 0x18, 0x11, 0x14, 0x12, 0x30))
            self.now += r.choice((0.0, 0.001, 0.5) if good else
                                 (0.0, 0.001, 0.5, 3.0, 15.0, 16.0, 17.0))
            f = _tcp(r, cip, lip, cport, lport, seq, ack, flags,
                     struct.pack("!BBBBII", 1, 1, 8, 10, r.getrandbits(32), tsecr),
                     r.randbytes(r.choice((0, r.randrange(21)))))
            self.send(f, WIRE, r)
        elif act == "segment":
            opts = struct.pack("!BBBBII", 1, 1, 8, 10, r.getrandbits(32), r.getrandbits(32)) \
                if r.getrandbits(1) else options(r)
            f = _tcp(r, r.choice(CLIENTS), r.choice(LOCALS), r.choice(CPORTS), r.choice(PORTS),
                     r.getrandbits(32), r.getrandbits(32), r.randrange(256), opts,
                     r.randbytes(r.randrange(31)))
            self.send(f, WIRE, r)
        elif act == "host":
            flags = r.choice((0x12, 0x12, 0x11, 0x04, 0x14, 0x10, 0x18, 0x02))
            if self.synacks and r.getrandbits(1):     # a flow the NIC has seen
                _, cip, lip, cport, lport, _ = r.choice(self.synacks)
            else:
                cip, lip = r.choice(CLIENTS), r.choice(LOCALS)
                cport, lport = r.choice(CPORTS), r.choice(PORTS)
            f = build_tcp_frame(PEER_MAC, NIC_MAC, lip, cip, 3, lport, cport, r.getrandbits(32),
                                r.getrandbits(32), flags, 1000, b"", r.randbytes(r.randrange(11)))
            self.send(f, HOST, r)
        elif act == "mutate" and self.history:
            f, port = r.choice(self.history)
            f = bytearray(f)
            for _ in range(r.randint(1, 3)):
                how = r.randrange(5)
                if how == 4 and len(f) > 47:           # the TCP data offset
                    f[46] = r.randrange(256)
                elif how <= 1 and len(f) > 14:
                    f[r.randint(12 if how else 14, len(f) - 1)] = r.randrange(256)
                elif how == 2 and len(f) > 15:
                    del f[r.randint(14, len(f) - 1):]
                else:
                    f += r.randbytes(r.randint(1, 8))
            if r.getrandbits(1):
                f = fix_checksums(f)
            self.send(bytes(f), port, r)
        elif act == "random":
            et = r.choice((b"\x08\x00", b"\x08\x00", b"\x08\x06", b"\x09\x0a"))
            f = PEER_MAC + NIC_MAC + et + r.randbytes(r.randrange(91))
            if r.getrandbits(1):
                f = fix_checksums(f)
            self.send(f, r.choice((WIRE, WIRE, HOST)), r)
        else:
            self.now += r.choice((0.001, 0.3, 1.0, 7.5, 16.0, 63.0, 64.0))


def test_generated_frames_agree(open_xdp):
    p = Pair(open_xdp, listener_capacity=4, handed_capacity=64, rst_on_bad_cookie=True)
    seen = Counter()

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(data):
        p.reset()
        r = Run(p, data)
        r.prelude()
        for _ in range(3 * ACTIONS):
            if r.sent >= ACTIONS:
                break
            r.step()
        p.check_state()
        seen.update(p.nic.counters)

    run()
    print("generated frames compared: %d" % p.frames)
    assert p.frames >= MIN_FRAMES, "only %d frames" % p.frames
    # the generated frames reach every outcome of this slice
    for name in ("syn_cookies_sent", "syn_to_host", "cookie_ack_ok", "cookie_ack_bad",
                 "cookie_ack_deferred", "rst_sent", "handed_inserted", "handed_removed", "handed_ack_to_host",
                 "handed_syn_to_host", "passthrough_host", "passthrough_wire",
                 "drop_offload_ethertype", "listener_table_full", "status_reports",
                 "malformed_ip_bad_checksum", "malformed_tcp_bad_checksum",
                 "malformed_tcp_option_overrun", "malformed_tcp_bad_option_length",
                 "malformed_ip_bad_length", "malformed_tcp_bad_offset"):
        assert seen[name] > 0, "%s: %s" % (name, sorted(seen.items()))
